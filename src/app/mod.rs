//! The application: what a signalbox server is made of and what it
//! answers. It composes the layers below (an Engine.IO endpoint, Socket.IO
//! on it, the signaling service on that), mounts them on a [`Site`], and
//! serves every other route from one table ([`routes`]): the health and
//! users pages, the metrics, the intercom page.

pub mod metrics;
pub mod routes;
pub mod web;

use std::rc::Rc;
use std::time::Duration;

use smol::Timer;

use crate::config::Config;
use crate::engineio::Engine;
use crate::http::Cors;
use crate::http::forwarded::Proxies;
use crate::server::{Activity, Site};
use crate::signaling::Signaling;
use crate::signaling::cluster::{Nodes, NodesLink};
use crate::signaling::directory::{Directory, DirectoryError};
use crate::socketio;

/// The whole intercom: Socket.IO with signaling on it, and its pages.
#[derive(Clone)]
pub struct Intercom {
    config: Config,
    io: socketio::Server,
    engine: Engine,
    signaling: Rc<Signaling>,
    page: web::Page,
}

impl Intercom {
    /// Sets up the intercom for `config` on this thread, as a single node.
    pub fn new(config: &Config) -> Intercom {
        Intercom::with_cluster(config, None)
    }

    /// Sets up the intercom for `config` on this thread, as one node of a
    /// cluster when given its link.
    pub fn with_cluster(config: &Config, cluster: Option<NodesLink>) -> Intercom {
        let io = socketio::Server::new(config.socketio.clone());
        let signaling = Signaling::install(&io, &config.signaling, cluster);
        let engine = Engine::new(config.engine.clone(), io.handler());
        Intercom {
            config: config.clone(),
            io,
            engine,
            signaling,
            page: web::Page::new(&config.path, config.signaling.reconnect_grace),
        }
    }

    /// The site that serves it: the Socket.IO endpoint and the routes.
    pub fn site(&self) -> Site {
        let intercom = self.clone();
        Site::new(
            Cors::new(self.config.cors_origins.clone()),
            self.config.http.clone(),
        )
        .trust(Proxies::new(self.config.trusted_proxies.iter().copied()))
        .mount(&self.config.path, self.engine.clone())
        .pages(move |request, visitor| intercom.answer(request, visitor))
    }

    /// Reads back the subscriptions and missed calls kept in `dir`, and
    /// keeps them there from now on.
    pub fn restore_state(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.signaling.restore_state(dir)
    }

    /// Writes a record of each call to `log`.
    pub fn set_call_log(&self, log: crate::calllog::CallLog) {
        self.signaling.set_call_log(log);
    }

    /// Signs pushes with `key` (read or made at start).
    pub fn set_vapid_key(&self, key: crate::push::crypto::VapidKey) {
        self.signaling
            .set_vapid_key(key, &self.config.signaling.push);
    }

    /// Uses `directory` for new calls.
    pub fn set_directory(&self, directory: Directory) {
        let (groups, users) = (directory.groups().len(), directory.user_count());
        log::info!("directory: {groups} groups, {users} users with settings");
        self.signaling.set_directory(Rc::new(directory));
    }

    /// Reads the directory file again (SIGHUP); `None` without one. A file
    /// that does not check leaves the directory as it was.
    pub fn reload_directory(&self) -> Option<Result<(), DirectoryError>> {
        let path = self.config.signaling.directory.as_ref()?;
        Some(Directory::load(path).map(|directory| self.set_directory(directory)))
    }

    /// One line on what the server is doing, for `systemctl status`.
    pub fn status(&self) -> String {
        let hub = self.signaling.hub();
        format!(
            "{} users, {} calls, {} sessions",
            hub.user_count(),
            hub.call_count(),
            self.engine.session_count()
        )
    }

    /// Ends every call (reason `server_shutdown`), closes every session once
    /// what is queued for it went out, and waits for them to go, up to the
    /// shutdown timeout.
    /// `activity` is the site's, whose last answers are waited for too.
    pub async fn shutdown(&self, activity: &Activity) {
        self.signaling.end_all_calls();
        self.signaling.let_hosted_go();
        if let Some(log) = self.signaling.call_log() {
            // The ended calls' records are on disk before the process goes.
            log.settle(Duration::from_secs(2)).await;
        }
        self.signaling.settle_state(Duration::from_secs(2)).await;
        self.engine.close_all();
        let quiet = async {
            // A last answer may still be in writing when the last session
            // ends, and no request opens a session once all are closed.
            self.engine.no_sessions().await;
            activity.idle().await;
        };
        let timeout = async {
            Timer::after(self.config.shutdown_timeout).await;
        };
        futures_lite::future::or(quiet, timeout).await;
        let left = self.engine.session_count();
        if left > 0 {
            log::warn!("{left} sessions still open at the shutdown timeout");
        }
        if let Some(cluster) = self.cluster() {
            // The other nodes must hear that our users and calls are gone.
            cluster.flush(Duration::from_secs(2)).await;
        }
    }

    /// The other nodes, when there are some.
    fn cluster(&self) -> Option<&dyn Nodes> {
        self.signaling.nodes()
    }
}

/// Builds the whole signalbox site for `config`, as a single node.
pub fn site(config: &Config) -> Site {
    Intercom::new(config).site()
}
