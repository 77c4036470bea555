//! 1,000 sequential connections through synguard where the server closes first (TIME_WAIT on
//! the server) and the client cycles through 8 source ports, so new SYNs keep meeting 4-tuples
//! the server still holds in TIME_WAIT (and conntrack too): none may take longer than 200 ms.

use std::time::Duration;

use anyhow::ensure;
use synguard_lab::client::{self, ClientConfig, Sample};
use synguard_lab::harness::{self, Bench, Need, run_cases};
use synguard_lab::kernel::{self, Counters};
use synguard_lab::server::Protocol;

const PORT: u16 = 8080;
const PAYLOAD: usize = 100 * 1024;
const CONNECTIONS: usize = 1000;
const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 40_000..=40_007;
const STALL: Duration = Duration::from_millis(200);

#[test]
fn reused_ports_do_not_stall() {
    let Some(_serial) = harness::start("no_stalls", &[Need::Daemon]) else {
        return;
    };
    run_cases("no_stalls", harness::cases(), |case| {
        let bench = Bench::protecting(PORT, PAYLOAD, case.mode)?;
        let lab = &bench.lab;
        let snmp_before = kernel::snmp(lab.server())?;
        let synproxy_before = kernel::synproxy(lab.server())?;
        let counters_before = Counters::of(lab.server_iface())?;
        let config = ClientConfig::new(
            lab.server_addr(case.family, PORT),
            Protocol::RequestFirst,
            PAYLOAD,
            CONNECTIONS,
        )
        .source_ports(SOURCE_PORTS);
        let report = client::run(lab.client(), config)?;
        let snmp = kernel::snmp(lab.server())?.since(&snmp_before);
        let synproxy = kernel::synproxy(lab.server())?.since(&synproxy_before);
        let counters = Counters::of(lab.server_iface())?.since(&counters_before);
        let total = |s: &Sample| s.total;
        println!("client: {}", report.summary());
        println!("whole-connection times:\n{}", report.distribution(total));
        println!(
            "server kernel: {}; SYNPROXY {}",
            snmp.show(&[
                "TcpExtTW",
                "TcpExtTWRecycled",
                "TcpExtTSEcrRejected",
                "TcpExtTCPSynRetrans",
                "TcpExtPAWSTimewait",
                "TcpOutRsts"
            ]),
            synproxy.show(&["cookie_valid", "cookie_invalid", "conn_reopened"])
        );
        println!("synguard counters: {counters}");
        ensure!(
            report.failures.is_empty(),
            "{} of {CONNECTIONS} connections failed, first: {:?}; synguard counters: {counters}",
            report.failures.len(),
            report.failures.iter().take(5).collect::<Vec<_>>()
        );
        let stalled = report.slower_than(total, STALL);
        ensure!(
            stalled == 0,
            "{stalled} of {CONNECTIONS} connections took longer than {STALL:?} (max {:.2?})",
            report.max(total)
        );
        Ok(())
    });
}
