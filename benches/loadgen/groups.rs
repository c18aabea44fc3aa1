//! group-calls: doors call ring groups of `--members` members each (the
//! server's directory must hold them: see `directory`), every member
//! answers at once, one wins. Call setup is make_call sent → call_answered
//! received, as in `calls`.

use super::*;

/// The directory for `groups` groups of `members`: group `k` is
/// `{prefix}grp{k}`, its door client `k * (members + 1)`, its members the
/// clients after it.
pub(crate) fn directory(prefix: &str, groups: usize, members: usize) -> String {
    let mut toml = String::new();
    for k in 0..groups {
        let names: Vec<String> = (1..=members)
            .map(|i| format!("\"{prefix}{}\"", k * (members + 1) + i))
            .collect();
        let _ = writeln!(
            toml,
            "[groups.{prefix}grp{k}]\nmembers = [{}]",
            names.join(", ")
        );
    }
    toml
}

/// One call from `door` to `group`, every member answering at once; the
/// setup time, once the losers were told.
async fn group_call(
    ctx: &Ctx,
    door: &Client,
    group: &str,
    members: &[&Client],
) -> Result<u64, Fail> {
    let timeout = ctx.opts.timeout;
    let start = Instant::now();
    door.emit(
        "make_call",
        json!({"to": group, "from": door.name, "offer": {"type": "offer", "sdp": ctx.sdp}}),
    )
    .await?;
    for member in members {
        member.expect("incoming_call", timeout).await?;
    }
    for member in members {
        // With an ack: a loser's answer refused once the race was decided
        // (which across nodes may come after anything else it hears) is
        // the ack's, not a `signaling_error` that a later call would meet.
        let answer = event_packet(
            "answer_call",
            &json!({"to": door.name, "from": member.name, "answer": {"type": "answer", "sdp": ctx.sdp}}),
        );
        let with_ack = format!("421{}", &answer[2..]);
        member.send(&[&with_ack]).await?;
    }
    let answered = door.expect("call_answered", timeout).await?;
    let setup = start.elapsed().as_nanos() as u64;
    let winner = event_payload(&answered)
        .and_then(|p| p["from"].as_str().map(str::to_owned))
        .ok_or_else(|| Fail::Unexpected(format!("call_answered without from: {answered}")))?;
    for member in members.iter().filter(|m| m.name != winner) {
        let ended = member.expect("call_ended", timeout).await?;
        if !ended.contains("answered_elsewhere") {
            return Err(Fail::Unexpected(format!("a loser got {ended}")));
        }
    }
    door.emit("end_call", json!({"to": group, "from": door.name}))
        .await?;
    let Some(winner) = members.iter().find(|m| m.name == winner) else {
        return Err(Fail::Unexpected(format!("{winner} is not a member")));
    };
    winner.expect("call_ended", timeout).await?;
    // The losers' answers came too late: each got its refusal, as an ack.
    for member in members {
        member.drain();
    }
    Ok(setup)
}

pub(crate) async fn group_calls(ctx: Rc<Ctx>) -> (Value, bool) {
    let opts = &ctx.opts;
    let (groups, size) = (opts.count, opts.members);
    eprintln!(
        "loadgen: group-calls: connecting {} clients ({groups} doors, {size} members each)",
        groups * (size + 1)
    );
    let joined = join_many(&ctx, groups * (size + 1), true).await;
    let clients = Rc::new(joined.clients);
    let setups = Rc::new(RefCell::new(Vec::with_capacity(groups * opts.repeat)));
    let errors = Rc::new(Cell::new(0usize));
    let start = Instant::now();
    let tasks: Vec<Task<()>> = (0..groups)
        .map(|k| {
            let (ctx, clients, setups, errors) =
                (ctx.clone(), clients.clone(), setups.clone(), errors.clone());
            spawn(async move {
                let repeat = ctx.opts.repeat;
                let first = k * (size + 1);
                let team: Option<Vec<&Client>> = clients[first..first + size + 1]
                    .iter()
                    .map(Option::as_ref)
                    .collect();
                let Some(team) = team else {
                    errors.set(errors.get() + repeat);
                    tally("group not connected");
                    return;
                };
                let group = format!("{}grp{k}", ctx.opts.prefix);
                for _ in 0..repeat {
                    match group_call(&ctx, team[0], &group, &team[1..]).await {
                        Ok(setup) => setups.borrow_mut().push(setup),
                        Err(fail) => {
                            errors.set(errors.get() + 1);
                            tally(format!("group call: {}", fail.kind()));
                            let _ = team[0]
                                .emit("end_call", json!({"to": group, "from": team[0].name}))
                                .await;
                            Timer::after(Duration::from_millis(300)).await;
                            for member in &team {
                                member.drain();
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut setups = std::mem::take(&mut *setups.borrow_mut());
    let completed = setups.len();
    let attempted = groups * opts.repeat;
    let ok = completed == attempted && joined.failures == 0;
    let setup = summary_ms(&mut setups);
    println!(
        "group-calls: {completed}/{attempted} calls to groups of {size} completed in {elapsed:.1}s, {} errors; \
         call setup p50 {} ms, p99 {} ms, max {} ms",
        errors.get(),
        setup["p50_ms"],
        setup["p99_ms"],
        setup["max_ms"],
    );
    let result = json!({
        "scenario": "group-calls",
        "groups": groups,
        "members": size,
        "repeat": opts.repeat,
        "join_failures": joined.failures,
        "attempted": attempted,
        "completed": completed,
        "errors": errors.get(),
        "elapsed_s": round(elapsed, 3),
        "setup": setup,
        "ok": ok,
    });
    (result, ok)
}
