//! A build without the `cluster` feature: no Redis client is linked in,
//! `--redis` is refused at start, and a [`Cluster`] can never exist, so the
//! signaling service's cluster branches compile to nothing.

use std::rc::Rc;
use std::time::Duration;

use smol::channel::Receiver;

use super::{ClusterConfig, ClusterStats, Inbound, Overview, PeerMessage};

/// This node's link to the cluster; in this build there is none.
pub enum Cluster {}

impl Cluster {
    /// Always fails: this build has no Redis client.
    pub async fn connect(_config: &ClusterConfig) -> Result<(Cluster, Receiver<Inbound>), String> {
        Err(
            "this signalbox was built without the `cluster` feature, so --redis is not \
             available (build it with the default features)"
                .to_owned(),
        )
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        match *self {}
    }

    /// The presence TTL.
    pub fn ttl(&self) -> Duration {
        match *self {}
    }

    /// How often presence and claims must be refreshed.
    pub fn refresh_period(&self) -> Duration {
        match *self {}
    }

    /// `user` registered here.
    pub fn joined(&self, _user: Rc<str>, _conn: Rc<str>) {
        match *self {}
    }

    /// `user` is no longer registered here.
    pub fn left(&self, _user: Rc<str>) {
        match *self {}
    }

    /// Sends `message` to the node of its recipient.
    pub fn route(&self, _message: &PeerMessage) {
        match *self {}
    }

    /// Claims `caller` and `callee` for a new call.
    pub fn claim(&self, _conn: Rc<str>, _caller: Rc<str>, _callee: Rc<str>) {
        match *self {}
    }

    /// The call `caller → callee` is over.
    pub fn release(&self, _caller: &Rc<str>, _callee: &Rc<str>) {
        match *self {}
    }

    /// Refreshes presence and claims.
    pub fn hold(
        &self,
        _users: &[(Rc<str>, Rc<str>)],
        _calls: &[(Rc<str>, Rc<str>, Rc<str>)],
        _restore: bool,
    ) {
        match *self {}
    }

    /// Checks that peers on other nodes still hold their claims.
    pub fn check(&self, _peers: Vec<(Rc<str>, Rc<str>, Rc<str>)>) {
        match *self {}
    }

    /// Every user and call in the cluster.
    pub async fn overview(&self) -> Result<Overview, String> {
        match *self {}
    }

    /// Runs `then` once Redis answered everything asked so far.
    pub fn after(&self, _then: impl FnOnce() + 'static) {
        match *self {}
    }

    /// Waits until everything asked so far went to Redis.
    pub async fn flush(&self, _limit: Duration) {
        match *self {}
    }

    /// Figures for metrics.
    pub fn stats(&self) -> ClusterStats {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_is_refused_with_the_reason() {
        let config = ClusterConfig {
            url: "redis://127.0.0.1:6379".into(),
            ..ClusterConfig::default()
        };
        match crate::rt::block_on(Cluster::connect(&config)) {
            Err(error) => assert!(error.contains("`cluster` feature"), "{error}"),
            Ok(_) => panic!("a cluster without the feature"),
        }
    }
}
