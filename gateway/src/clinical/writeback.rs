//! Telling the clinic's EMR what the patient decided. The EMR adapters implement [`WriteBack`];
//! the workflows only say what changed.

use async_trait::async_trait;

use crate::domain::appointment::Appointment;
use crate::tenants::ClinicSettings;
use crate::workflows::PatientChange;

#[async_trait]
pub trait WriteBack: Send + Sync + 'static {
    /// Records the change for the clinic's EMR. Must return quickly: an implementation queues
    /// the write durably and delivers it (with retries) on its own.
    async fn patient_changed(
        &self,
        clinic: &ClinicSettings,
        appointment: &Appointment,
        change: PatientChange,
    );
}

/// For clinics without an EMR connection: the signed callback is all they get.
pub struct NoWriteBack;

#[async_trait]
impl WriteBack for NoWriteBack {
    async fn patient_changed(
        &self,
        clinic: &ClinicSettings,
        a: &Appointment,
        change: PatientChange,
    ) {
        tracing::debug!(tenant = %clinic.id, appointment = %a.id, ?change, "no EMR write-back configured");
    }
}
