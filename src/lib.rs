//! signalbox: a WebRTC signaling server for on-premises intercoms, speaking
//! Socket.IO v4 (Engine.IO 4, Socket.IO 5) so unmodified `socket.io-client`
//! apps work with it.
//!
//! The layers, each knowing only the one below:
//! [`http`] → [`engineio`] → [`socketio`] → [`signaling`] → [`app`].
//! [`server`] serves a site (an app's Engine.IO endpoints and routes) on
//! sockets; [`rt`] runs everything on one thread, with one queue of
//! deadlines. The rest are small utilities any layer may use (ids, rates,
//! tokens, logging). docs/ARCHITECTURE.md says which module owns what.

#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod base64;
pub mod calllog;
pub mod config;
pub mod engineio;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod id;
pub mod logging;
pub mod push;
pub mod rate;
pub mod rt;
pub mod server;
pub mod signaling;
pub mod socketio;
pub mod statefile;
pub mod systemd;
pub mod timestamp;
pub mod tls;

use std::io;
use std::net::TcpListener;
use std::rc::Rc;
use std::time::Duration;

use async_signal::{Signal, Signals};
use futures_lite::{StreamExt, future};
use smol::Timer;

use app::Intercom;
pub use config::Config;

/// Serves signalbox on `listener` until SIGTERM or SIGINT, then shuts down
/// gracefully: refuses new sessions, ends every call, closes every session
/// once its last packets went out, and stops.
/// Blocks the calling thread, which runs every task of the server.
pub fn serve(listener: TcpListener, config: Config) -> io::Result<()> {
    rt::block_on(async move {
        let cluster = match &config.cluster {
            Some(cluster) => Some(
                signaling::cluster::connect(cluster)
                    .await
                    .map_err(io::Error::other)?,
            ),
            None => None,
        };
        let push = &config.signaling.push;
        let state_dir = config.signaling.state_dir.as_deref();
        // Opening the log makes the state directory, where the key may go.
        let call_log = match state_dir {
            Some(dir) => {
                let files = calllog::Files::new(dir, calllog::MAX_FILE_BYTES, calllog::KEEP);
                let log = calllog::CallLog::open(files).map_err(|error| {
                    io::Error::other(format!(
                        "cannot open the call log in {}: {error}",
                        dir.display()
                    ))
                })?;
                Some((dir, log))
            }
            None => None,
        };
        let mut key =
            push::load_key(push.vapid_key_file.as_deref(), state_dir).map_err(io::Error::other)?;
        if let (Some((nodes, _)), None) = (&cluster, &push.vapid_key_file) {
            key = Some(cluster_key(nodes.as_ref(), key).await?);
        }
        let intercom = Intercom::with_cluster(&config, cluster);
        if let Some(path) = &config.signaling.directory {
            let directory =
                signaling::directory::Directory::load(path).map_err(io::Error::other)?;
            intercom.set_directory(directory);
        }
        if let Some((dir, log)) = call_log {
            intercom.set_call_log(log);
            intercom.restore_state(dir)?;
        }
        match key {
            Some(key) => intercom.set_vapid_key(key),
            None => log::info!(
                "VAPID key made in memory: push subscriptions last until a restart (give --state-dir to keep it)"
            ),
        }
        let mut site = intercom.site();
        let tls = match &config.tls {
            Some((cert, key)) => {
                let tls = Rc::new(tls::Tls::load(cert, key).map_err(io::Error::other)?);
                site = site.tls(tls.clone());
                Some(tls)
            }
            None => None,
        };
        let activity = site.activity();
        let mut signals = Signals::new([Signal::Term, Signal::Int, Signal::Hup])?;
        if testing_wedge() {
            signals.add_signals([Signal::Usr2])?;
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        log::info!("listening on {scheme}://{}", listener.local_addr()?);
        systemd::notify(&format!("READY=1\nSTATUS={}", intercom.status()));
        rt::spawn(keep_systemd_informed(intercom.clone())).detach();

        // Signals are read in a task of their own: this future is polled
        // again whenever any task is woken, and polling the signal pipe
        // costs a system call each time (one more per relayed message).
        let stop = rt::spawn({
            let (tls, intercom) = (tls.clone(), intercom.clone());
            async move {
                while let Some(signal) = signals.next().await {
                    match signal {
                        Ok(Signal::Usr2) => wedge_if_testing(),
                        Ok(Signal::Hup) => reload(tls.as_deref(), &intercom),
                        Ok(signal) => return Ok(signal),
                        Err(error) => return Err(error),
                    }
                }
                Err(io::ErrorKind::BrokenPipe.into())
            }
        });
        // Connections are still accepted while shutting down: clients open
        // new ones to collect their last packets, and new sessions get 503.
        let mut serving = rt::spawn(site.serve(listener));
        let signal = future::or(
            async {
                (&mut serving).await?;
                Err(io::ErrorKind::BrokenPipe.into())
            },
            stop,
        )
        .await?;
        log::info!("{signal:?} received; shutting down");
        systemd::notify("STOPPING=1\nSTATUS=shutting down");
        intercom.shutdown(&activity).await;
        drop(serving);
        log::info!("stopped");
        Ok(())
    })
}

/// The VAPID key of the whole cluster: a subscription made with one
/// node's public key takes pushes signed with that key only, and any node
/// may push to it. The first node to start puts its key (`kept`, or a new
/// one) in Redis; the others use that one.
async fn cluster_key(
    nodes: &dyn signaling::cluster::Nodes,
    kept: Option<push::crypto::VapidKey>,
) -> io::Result<push::crypto::VapidKey> {
    let ours = match kept {
        Some(key) => key,
        None => push::crypto::VapidKey::generate().map_err(io::Error::other)?,
    };
    let pem = nodes
        .agree(signaling::cluster::VAPID_KEY, ours.to_pem())
        .await
        .map_err(|error| io::Error::other(format!("the cluster's VAPID key: {error}")))?;
    let key = push::crypto::VapidKey::from_text(&pem)
        .map_err(|error| io::Error::other(format!("the cluster's VAPID key: {error}")))?;
    if key.public_key_base64url() != ours.public_key_base64url() {
        log::info!(
            "signing pushes with the cluster's VAPID key {}",
            key.public_key_base64url()
        );
    }
    Ok(key)
}

/// SIGHUP: reads the certificate and key again (live connections keep
/// theirs), and the directory (calls in progress keep theirs).
fn reload(tls: Option<&tls::Tls>, intercom: &Intercom) {
    match tls.map(tls::Tls::reload) {
        Some(Ok(())) => log::info!("SIGHUP: certificate reloaded"),
        Some(Err(error)) => {
            log::error!("SIGHUP: certificate not reloaded, the old one stays: {error}")
        }
        None => {}
    }
    match intercom.reload_directory() {
        Some(Ok(())) => log::info!("SIGHUP: directory reloaded"),
        Some(Err(error)) => {
            log::error!("SIGHUP: directory not reloaded, the old one stays: {error}")
        }
        None if tls.is_none() => log::info!("SIGHUP: nothing to reload"),
        None => {}
    }
}

/// Sends systemd the watchdog keep-alive at half its interval, from the
/// event loop itself (so a wedged loop gets the service restarted), and a
/// status line.
async fn keep_systemd_informed(intercom: Intercom) {
    if systemd::Notifier::from_env().is_none() {
        return;
    }
    let watchdog = systemd::watchdog_interval();
    let period = watchdog.map_or(Duration::from_secs(10), |w| {
        (w / 2).min(Duration::from_secs(10))
    });
    loop {
        Timer::after(period).await;
        let status = format!("STATUS={}", intercom.status());
        if watchdog.is_some() {
            systemd::notify(&format!("WATCHDOG=1\n{status}"));
        } else {
            systemd::notify(&status);
        }
    }
}

/// For the watchdog test only: with `SIGNALBOX_TEST_WEDGE=1` in the
/// environment, SIGUSR2 blocks the event loop for good.
fn testing_wedge() -> bool {
    std::env::var("SIGNALBOX_TEST_WEDGE").as_deref() == Ok("1")
}

fn wedge_if_testing() {
    if testing_wedge() {
        log::warn!("SIGUSR2 with SIGNALBOX_TEST_WEDGE=1: wedging the event loop");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
