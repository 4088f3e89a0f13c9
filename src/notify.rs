//! systemd readiness (`Type=notify`): READY=1 once the mount answers, STOPPING=1 when the
//! unmount starts. Without NOTIFY_SOCKET (not started by systemd) these do nothing.

use sd_notify::NotifyState;

/// The mount is up and answers.
pub fn ready(status: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]) {
        tracing::warn!("sd_notify READY: {e}");
    }
}

/// The unmount has started (uploads in progress are waited for, bounded).
pub fn stopping() {
    if let Err(e) = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("unmounting")]) {
        tracing::warn!("sd_notify STOPPING: {e}");
    }
}
