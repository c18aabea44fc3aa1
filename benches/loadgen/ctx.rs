//! What every scenario shares: the options, the servers, and joining clients.

use super::*;

pub(crate) struct Ctx {
    pub(crate) opts: Opts,
    pub(crate) net: Rc<Net>,
    /// Cross-node: the callees' server.
    pub(crate) callee_net: Option<Rc<Net>>,
    pub(crate) sdp: String,
}

impl Ctx {
    pub(crate) fn name(&self, i: usize) -> String {
        format!("{}{i}", self.opts.prefix)
    }

    /// Spreads polling clients evenly: client `i` polls when the running
    /// count of polling clients steps up at `i`.
    pub(crate) fn polling(&self, i: usize) -> bool {
        let share = self.opts.polling_share;
        ((i + 1) as f64 * share).floor() > (i as f64 * share).floor()
    }

    pub(crate) fn sample(&self) -> Option<Sample> {
        sample_process(self.opts.server_pid)
    }

    /// The server client `i` connects to: callees (odd) go to the other
    /// node in cross-node runs.
    pub(crate) fn net_for(&self, i: usize) -> &Rc<Net> {
        match &self.callee_net {
            Some(net) if i % 2 == 1 => net,
            _ => &self.net,
        }
    }
}

/// Connects and registers one client, within the timeout.
pub(crate) async fn join(ctx: &Ctx, i: usize, keep_posts: bool) -> Result<Client, String> {
    let timeout = ctx.opts.timeout;
    within(timeout, "connect and register", async {
        let net = ctx.net_for(i);
        let client = Client::connect(net, ctx.name(i), ctx.polling(i), keep_posts).await?;
        client
            .register(timeout)
            .await
            .map_err(|f| format!("register: {}", f.kind()))?;
        Ok(client)
    })
    .await
}

pub(crate) struct Joined {
    pub(crate) clients: Vec<Option<Client>>,
    pub(crate) setup_ns: Vec<u64>,
    pub(crate) failures: usize,
}

/// Connects and registers clients 0..n, `--concurrency` at a time.
pub(crate) async fn join_many(ctx: &Rc<Ctx>, n: usize, keep_posts: bool) -> Joined {
    let slots: Rc<RefCell<Vec<Option<Client>>>> =
        Rc::new(RefCell::new((0..n).map(|_| None).collect()));
    let setup_ns = Rc::new(RefCell::new(Vec::with_capacity(n)));
    let failures = Rc::new(Cell::new(0));
    let next = Rc::new(Cell::new(0));
    let workers: Vec<Task<()>> = (0..ctx.opts.concurrency.min(n))
        .map(|_| {
            let (ctx, slots, setup_ns, failures, next) = (
                ctx.clone(),
                slots.clone(),
                setup_ns.clone(),
                failures.clone(),
                next.clone(),
            );
            spawn(async move {
                loop {
                    let i = next.get();
                    if i >= n {
                        break;
                    }
                    next.set(i + 1);
                    let start = Instant::now();
                    match join(&ctx, i, keep_posts).await {
                        Ok(client) => {
                            setup_ns
                                .borrow_mut()
                                .push(start.elapsed().as_nanos() as u64);
                            slots.borrow_mut()[i] = Some(client);
                        }
                        Err(error) => {
                            failures.set(failures.get() + 1);
                            tally(format!("join: {error}"));
                        }
                    }
                }
            })
        })
        .collect();
    let mut last_report = Instant::now();
    for worker in workers {
        worker.await;
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("loadgen: {} of {n} clients set up", next.get());
            last_report = Instant::now();
        }
    }
    let clients = std::mem::take(&mut *slots.borrow_mut());
    let setup_ns = std::mem::take(&mut *setup_ns.borrow_mut());
    Joined {
        clients,
        setup_ns,
        failures: failures.get(),
    }
}

pub(crate) fn fd_budget(
    opts: &Opts,
    clients: usize,
    keep_posts: bool,
    soft: u64,
) -> Result<(), String> {
    let per_client = if keep_posts {
        1.0 + opts.polling_share
    } else {
        1.0
    };
    let needed = (clients as f64 * per_client).ceil() as u64 + opts.concurrency as u64 + 64;
    if needed > soft {
        return Err(format!(
            "{clients} clients need about {needed} file descriptors, and this process may open {soft} \
             (ulimit -Hn): use fewer clients"
        ));
    }
    Ok(())
}
