//! Where the process is in its shutdown, shared by the server (which drains
//! and cuts) and the streams (which end with an error event when cut rather
//! than be broken off at the transport).

use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
pub struct Lifecycle {
    /// The listener is closed; requests in flight are finishing.
    pub draining: CancellationToken,
    /// The grace period is over: streams still open end now.
    pub cutting: CancellationToken,
}
