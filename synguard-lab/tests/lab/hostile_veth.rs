//! A sample of the hostile corpus (`synguard_lab::hostile`, the frames `hostile_packets.rs`
//! runs through `BPF_PROG_TEST_RUN`) crosses a real veth: sent whole from the client namespace
//! through an AF_PACKET socket, with the veth ends' own MAC addresses, to the running daemon.
//! The program's counters must move exactly as the reference model predicts for the sample,
//! and the daemon keeps running: legitimate connections still succeed and it exits cleanly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use synguard_common::{Counter, DatapathConfig};
use synguard_lab::client;
use synguard_lab::daemon::XdpMode;
use synguard_lab::harness::{self, Bench, Need, run_cases};
use synguard_lab::hostile::corpus::{Case, PROTECTED, corpus};
use synguard_lab::hostile::model::{Action, CookieBook, Policy};
use synguard_lab::kernel::Counters;
use synguard_lab::netns::Iface;
use synguard_lab::packet::PacketSocket;
use synguard_lab::topology::{Family, Lab};

/// Cases taken from each category of the corpus, spread over it.
const PER_CATEGORY: usize = 6;
/// The largest frame a veth with the default MTU forwards (jumbo cases stay in
/// `hostile_packets.rs`).
const MAX_FRAME: usize = 1514;
/// The sample must include this many SYNs that XDP answers (XDP_TX back over the veth).
const MIN_ANSWERED: usize = 5;
/// How long the counters may take to show every frame of the sample.
const SETTLE: Duration = Duration::from_secs(5);
/// Frames the client's own kernel may still send after the sample's last one arrived.
const QUIET: Duration = Duration::from_millis(300);
const PAYLOAD: usize = 4096;
const LEGIT_CONNECTIONS: usize = 3;
/// What frames of the client namespace's own kernel (IPv6 neighbour discovery, MLD, router
/// solicitations, ARP) may count while the sample crosses: never a TCP outcome.
const BACKGROUND: [Counter; 2] = [Counter::PassNonIp, Counter::PassNonTcp];

#[test]
fn corpus_sample_over_veth_matches_the_model() {
    let Some(_serial) = harness::start("hostile_veth", &[Need::Daemon]) else {
        return;
    };
    let sample = sample();
    let categories: BTreeMap<&str, usize> =
        sample.iter().fold(BTreeMap::new(), |mut count, case| {
            *count.entry(case.category).or_default() += 1;
            count
        });
    println!("sample: {} frames, {categories:?}", sample.len());
    run_cases("hostile_veth", XdpMode::ALL, |&mode| check(mode, &sample));
}

/// [`PER_CATEGORY`] cases of each category whose frames fit the veth, evenly spaced so that
/// every framing and IP version of the category's table is likely in.
fn sample() -> Vec<Case> {
    let mut by_category: BTreeMap<&str, Vec<Case>> = BTreeMap::new();
    for case in corpus() {
        if case.spec.build().len() <= MAX_FRAME {
            by_category.entry(case.category).or_default().push(case);
        }
    }
    by_category
        .into_values()
        .flat_map(|cases| {
            let step = cases.len().div_ceil(PER_CATEGORY);
            cases.into_iter().step_by(step)
        })
        .collect()
}

fn check(mode: XdpMode, sample: &[Case]) -> Result<()> {
    let ports = PROTECTED.map(|port| port.to_string()).join(",");
    let bench = Bench::start(Lab::new()?, PROTECTED[0], PAYLOAD, &ports, mode, &[])?;
    let lab = &bench.lab;
    let (client_mac, server_mac) = (lab.client_iface().mac()?, lab.server_iface().mac()?);
    let frames: Vec<Vec<u8>> = sample
        .iter()
        .map(|case| {
            let mut spec = case.spec.clone();
            spec.on_link(client_mac, server_mac);
            spec.build()
        })
        .collect();

    // The daemon runs with its default tunables and `--syncookies always`, the model's policy.
    // No ACK of the sample completes a cookie: the corpus's addresses are documentation ones
    // and nothing answers the SYN-ACKs, so an empty cookie book judges them.
    let mut policy = Policy::new(&PROTECTED, DatapathConfig::DEFAULT);
    let cookies = CookieBook::default();
    let mut expected = vec![0u64; Counter::ALL.len()];
    let mut answered = 0;
    for frame in &frames {
        let expectation = policy.expect(frame, &cookies);
        answered += usize::from(expectation.action == Action::Tx);
        for (sum, delta) in expected.iter_mut().zip(expectation.counter_deltas()) {
            *sum += delta;
        }
    }
    ensure!(
        answered >= MIN_ANSWERED,
        "the sample has {answered} SYNs the program answers, fewer than {MIN_ANSWERED}"
    );

    let iface = lab.server_iface();
    let before = Counters::of(iface)?;
    let socket = PacketSocket::open(lab.client(), lab.client_iface().name(), QUIET)?;
    for frame in &frames {
        socket.send(frame)?;
    }
    let observed = settled(iface, &before, expected[Counter::Packets as usize])?;
    println!(
        "{} frames sent ({answered} answered by XDP): {observed}",
        frames.len()
    );
    compare(&expected, &observed)?;

    for family in Family::ALL {
        let target = lab.server_addr(family, PROTECTED[0]);
        client::ensure_all_connect(lab.client(), target, PAYLOAD, LEGIT_CONNECTIONS)
            .with_context(|| format!("{family} after the hostile sample"))?;
    }
    let Bench { daemon, .. } = bench;
    daemon.stop()?.ensure_success()
}

/// The counters since `before` once the program has seen at least `packets` frames and the
/// link has been quiet for [`QUIET`].
fn settled(iface: &Iface, before: &Counters, packets: u64) -> Result<Counters> {
    let started = Instant::now();
    loop {
        let delta = Counters::of(iface)?.since(before);
        if delta.get(Counter::Packets) >= packets || started.elapsed() > SETTLE {
            std::thread::sleep(QUIET);
            return Ok(Counters::of(iface)?.since(before));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every counter as the model predicts, except frames of the client's own kernel in the
/// [`BACKGROUND`] counters, each also counted in `packets`.
fn compare(expected: &[u64], observed: &Counters) -> Result<()> {
    let mut mismatches = Vec::new();
    let mut background = 0;
    for &counter in Counter::ALL {
        let (want, got) = (expected[counter as usize], observed.get(counter));
        if BACKGROUND.contains(&counter) && got >= want {
            background += got - want;
        } else if counter != Counter::Packets && got != want {
            mismatches.push(format!("{}: {got}, the model's {want}", counter.name()));
        }
    }
    let (want_packets, got_packets) = (
        expected[Counter::Packets as usize],
        observed.get(Counter::Packets),
    );
    if got_packets != want_packets + background {
        mismatches.push(format!(
            "packets: {got_packets}, the model's {want_packets} plus {background} of the client's own kernel"
        ));
    }
    if background > 0 {
        println!(
            "{background} frames of the client's own kernel (neighbour discovery, ARP) crossed too"
        );
    }
    ensure!(mismatches.is_empty(), "{}", mismatches.join("; "));
    Ok(())
}
