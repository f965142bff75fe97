//! Redis store: written by the store work package.
