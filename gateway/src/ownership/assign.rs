//! Who should own what: rendezvous (highest random weight) hashing of an item over the live
//! nodes. Every node computes the same answer from the same list, ownership spreads evenly, and
//! a node joining or leaving moves only the items it wins or loses (about 1/N of them).

use sha2::{Digest, Sha256};

/// The node among `nodes` that should own `item`; `None` when there are no nodes.
pub fn preferred<'a>(item: &str, nodes: &'a [String]) -> Option<&'a str> {
    nodes
        .iter()
        .max_by_key(|node| (weight(node, item), node.as_str()))
        .map(String::as_str)
}

/// A stable weight of (node, item): SHA-256, so every build and platform agrees (std's hasher
/// may change between Rust releases, and nodes of two releases run side by side in a rollout).
fn weight(node: &str, item: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(node.as_bytes())
        .chain_update([0u8])
        .chain_update(item.as_bytes())
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(digest.get(..8).unwrap_or(&[0u8; 8]));
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn items() -> Vec<String> {
        (0..3_000).map(|i| format!("1{i:06}")).collect()
    }

    #[test]
    fn no_nodes_no_owner() {
        assert_eq!(preferred("1055", &[]), None);
    }

    #[test]
    fn every_node_agrees_whatever_the_order() {
        let a = nodes(3);
        let mut b = a.clone();
        b.reverse();
        for item in items() {
            assert_eq!(preferred(&item, &a), preferred(&item, &b));
        }
    }

    #[test]
    fn ownership_spreads_evenly() {
        let n = nodes(3);
        let mut counts = [0usize; 3];
        for item in items() {
            let owner = preferred(&item, &n).unwrap_or_default();
            if let Some(i) = n.iter().position(|x| x == owner) {
                counts[i] += 1;
            }
        }
        // 1,000 each on average; a fair hash stays well within ±15 %.
        for c in counts {
            assert!((850..=1_150).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_items() {
        let three = nodes(3);
        let two: Vec<String> = three.iter().filter(|n| *n != "node-1").cloned().collect();
        for item in items() {
            let before = preferred(&item, &three);
            let after = preferred(&item, &two);
            if before != Some("node-1") {
                assert_eq!(before, after, "{item} moved although its owner stayed");
            }
        }
    }

    #[test]
    fn a_node_joining_takes_about_a_third() {
        let two = nodes(2);
        let three = nodes(3);
        let moved = items()
            .iter()
            .filter(|i| preferred(i, &two) != preferred(i, &three))
            .count();
        assert!((850..=1_150).contains(&moved), "{moved} moved");
        assert!(items()
            .iter()
            .filter(|i| preferred(i, &two) != preferred(i, &three))
            .all(|i| preferred(i, &three) == Some("node-2")));
    }
}
