//! Options as they cross the boundary. `lib/options.js` validates what the user
//! passed (types, ranges, unknown names) and fills in defaults, so every field
//! here is present and in range; the constructor only converts units.

use napi_derive::napi;

#[napi(object)]
pub struct NativeOptions {
    pub min_delay: f64,
    pub max_delay: f64,
    pub factor: f64,
    /// `'full' | 'equal' | 'none'`
    pub jitter: String,
    /// `Infinity` for unlimited.
    pub max_retries: f64,
    pub min_uptime: f64,
    pub connect_timeout: f64,
    pub close_timeout: f64,
    pub max_payload: f64,
}
