//! synguard's nftables table as the `nftables` crate's JSON schema: the whole table, the batch
//! that updates it, and the table's JSON as `nft -j` takes it.

use std::borrow::Cow;
use std::collections::HashSet;

use nftables::expr::{
    BinaryOperation, CT, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression,
    Payload, PayloadField, Range,
};
use nftables::schema::{
    Chain, Element, FlushObject, NfCmd, NfListObject, NfObject, Nftables, Rule, Set, SetFlag,
    SetType, SetTypeValue, Table,
};
use nftables::stmt::{Match, Operator, Statement, SynProxy};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook, SynProxyFlag};
use serde_json::Value;
use synguard_common::DatapathConfig;

use crate::settings::ports::PortSet;

pub(super) const TABLE: &str = "synguard";
const FAMILY: NfFamily = NfFamily::INet;
const PORTS_SET: &str = "ports";
const PRIO_RAW: i32 = -300;
/// The input chain's: after conntrack (-200), whose `ct state` synproxy needs, and before the
/// filter chains of the host's own firewall (priority filter, 0: nft rulesets, iptables-nft;
/// firewalld's at 10). Of two base chains of one priority the later registered runs first, so
/// at 0 a user's chain recreated after synguard's would see cookie ACKs first, `ct state
/// invalid`, and drop them unless it accepted the port whatever the state (measured:
/// `firewall.rs`). Here synproxy always takes them first.
const PRIO_MANGLE: i32 = -150;

/// Serializes for `nft -j`, fixing nftables 0.6.3's `Statement::Notrack`, which serializes
/// as the bare string `"notrack"` where nft expects `{"notrack": null}` (nft rejects the
/// string: "Unexpected expr array element of type string, expected object").
pub(super) fn to_nft_json(ruleset: &Nftables<'_>) -> Value {
    let mut json = serde_json::to_value(ruleset).expect("nftables schema types serialize");
    if let Some(objects) = json.get_mut("nftables").and_then(Value::as_array_mut) {
        for object in objects {
            let Some(rule) = object.pointer_mut("/add/rule") else {
                continue;
            };
            let Some(statements) = rule.get_mut("expr").and_then(Value::as_array_mut) else {
                continue;
            };
            for statement in statements {
                if statement.as_str() == Some("notrack") {
                    *statement = serde_json::json!({ "notrack": null });
                }
            }
        }
    }
    json
}

/// The whole table, as one batch:
///
/// ```text
/// table inet synguard {
///   set ports { type inet_service; flags interval; elements = { ... } }
///   chain output { type filter hook output priority raw;
///     tcp dport @ports tcp flags & (fin|syn|rst|ack) == ack fib saddr type != local notrack }
///   chain input { type filter hook input priority mangle;
///     iifname != "lo" meta nfproto ipv4 tcp dport @ports tcp flags & (fin|syn|rst|ack) == ack ct state invalid,untracked synproxy mss MSS4 wscale W timestamp sack-perm
///     iifname != "lo" meta nfproto ipv6 tcp dport @ports tcp flags & (fin|syn|rst|ack) == ack ct state invalid,untracked synproxy mss MSS6 wscale W timestamp sack-perm
///     iifname != "lo" tcp dport @ports ct state invalid drop }
/// }
/// ```
///
/// XDP answers the SYNs; an ACK with a valid cookie has no conntrack entry, is `invalid` (with
/// `nf_conntrack_tcp_loose=0`) and synproxy turns it into a connection. Anything else invalid
/// on these ports is dropped; other ports are untouched.
///
/// Only pure ACKs (of FIN, SYN, RST and ACK only ACK set) reach synproxy: nft's `synproxy`
/// answers any segment with SYN set with a SYN-ACK and takes any other segment with ACK set
/// for a handshake ACK, unlike the xt `SYNPROXY` target, which checks for a pure SYN and a pure
/// ACK. SYN+FIN, SYN+RST and SYN+ACK, which XDP passes and conntrack marks invalid, would get
/// a SYN-ACK that the kernel alone never sends (it discards the first two and answers SYN+ACK
/// on a listener with a RST); they are dropped with the rest of `invalid`. SYNs conntrack
/// accepts (`new`: the TIME_WAIT reuse below, mode `off`) never meet the rule.
///
/// Unlike the textbook synproxy setup there is no raw-prerouting `notrack` for SYNs: a SYN that
/// XDP passes on purpose (its 4-tuple is still in TIME_WAIT) must meet conntrack and the
/// listener, which reopen the old connection; a synproxy cookie answered there would later
/// meet the old TIME_WAIT conntrack entry, which swallows the ACK (measured: a reused port
/// hung the connection). On an interface without XDP, SYNs get the kernel's own handling.
///
/// The output rule fixes a stall of the stock synproxy rules. Synproxy completes the
/// handshake with the listener by sending it an ACK from the client's address. That ACK leaves
/// through POSTROUTING as an original-direction packet of the now-established conntrack entry,
/// where synproxy's timestamp translation adds `tsoff` to a TSecr that is already in the
/// listener's clock: the listener gets a TSecr it never sent. Since Linux 6.14 ("tcp: be less
/// liberal in TSEcr received while in SYN_RECV state") the listener drops it
/// (TcpExtTSEcrRejected) and answers with a challenge ACK. The connection then opens only with
/// the client's next segment, and not at all (until the listener's SYN-ACK retransmit, 1 s) when
/// the server speaks first or when the millisecond clock ticked between the SYN-ACK and the
/// challenge ACK (the client then echoes a TSval outside the SYN-ACK range: ~1% of
/// connections, measured as 1.65 s stalls). Leaving that ACK untracked keeps the translation
/// away from it. It is the only locally generated packet to a protected port with a foreign
/// source address and ACK alone; it comes back in on `lo`, hence the loopback exemptions, which
/// also leave host-local clients to the plain stack (conntrack as usual).
pub(super) fn ruleset(ports: &PortSet, config: &DatapathConfig) -> Nftables<'static> {
    let add = |object| NfObject::CmdObject(NfCmd::Add(object));
    let mut objects = vec![
        // `create` fails if the table appeared since `table_exists`, rather than merging.
        NfObject::CmdObject(NfCmd::Create(NfListObject::Table(table()))),
        add(NfListObject::Set(Box::new(Set {
            elem: Some(port_elements(ports).into()),
            ..ports_set()
        }))),
        add(base_chain("output", NfHook::Output, PRIO_RAW)),
        add(base_chain("input", NfHook::Input, PRIO_MANGLE)),
        add(rule(
            "output",
            vec![
                dport_protected(),
                only_flag("ack"),
                saddr_not_local(),
                Statement::Notrack,
            ],
        )),
    ];
    objects.extend(input_rules(config).into_iter().map(add));
    Nftables {
        objects: objects.into(),
    }
}

/// The batch that brings an installed table to new ports and synproxy options in one
/// transaction: the set's elements and the input chain's rules are replaced, the table and its
/// chains stay (no moment without protection).
pub(super) fn update_batch(ports: &PortSet, config: &DatapathConfig) -> Nftables<'static> {
    let mut objects = vec![
        NfObject::CmdObject(NfCmd::Flush(FlushObject::Set(Box::new(ports_set())))),
        NfObject::CmdObject(NfCmd::Add(NfListObject::Element(Element {
            family: FAMILY,
            table: TABLE.into(),
            name: PORTS_SET.into(),
            elem: port_elements(ports).into(),
        }))),
        NfObject::CmdObject(NfCmd::Flush(FlushObject::Chain(input_chain()))),
    ];
    objects.extend(
        input_rules(config)
            .into_iter()
            .map(|rule| NfObject::CmdObject(NfCmd::Add(rule))),
    );
    Nftables {
        objects: objects.into(),
    }
}

/// The batch that replaces a table left in place by an earlier synguard in one transaction
/// (adding it first makes the delete succeed when it is gone).
pub(super) fn replace_batch(ports: &PortSet, config: &DatapathConfig) -> Nftables<'static> {
    let mut objects = vec![
        NfObject::CmdObject(NfCmd::Add(NfListObject::Table(table()))),
        NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(table()))),
    ];
    objects.extend(ruleset(ports, config).objects.iter().cloned());
    Nftables {
        objects: objects.into(),
    }
}

/// `delete table inet synguard`
pub(super) fn delete_batch() -> Nftables<'static> {
    Nftables {
        objects: vec![NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(
            table(),
        )))]
        .into(),
    }
}

/// `set ports { type inet_service; flags interval; }` without elements.
fn ports_set() -> Set<'static> {
    Set {
        family: FAMILY,
        table: TABLE.into(),
        name: PORTS_SET.into(),
        set_type: SetTypeValue::Single(SetType::InetService),
        flags: Some(HashSet::from([SetFlag::Interval])),
        ..Set::default()
    }
}

fn port_elements(ports: &PortSet) -> Vec<Expression<'static>> {
    ports
        .ranges()
        .iter()
        .map(|r| {
            if r.start() == r.end() {
                number(*r.start())
            } else {
                Expression::Range(Box::new(Range {
                    range: [number(*r.start()), number(*r.end())],
                }))
            }
        })
        .collect()
}

/// The input chain's rules: synproxy per family (the MSS differs), then drop other invalid.
fn input_rules(config: &DatapathConfig) -> [NfListObject<'static>; 3] {
    [
        rule("input", synproxy_rule("ipv4", config.mss4, config.wscale)),
        rule("input", synproxy_rule("ipv6", config.mss6, config.wscale)),
        rule(
            "input",
            vec![
                not_loopback(),
                dport_protected(),
                ct_state(Expression::String("invalid".into())),
                Statement::Drop(None),
            ],
        ),
    ]
}

fn input_chain() -> Chain<'static> {
    Chain {
        family: FAMILY,
        table: TABLE.into(),
        name: "input".into(),
        ..Chain::default()
    }
}

fn table() -> Table<'static> {
    Table {
        family: FAMILY,
        name: TABLE.into(),
        handle: None,
    }
}

fn base_chain(name: &'static str, hook: NfHook, prio: i32) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family: FAMILY,
        table: TABLE.into(),
        name: name.into(),
        _type: Some(NfChainType::Filter),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    })
}

fn rule(chain: &'static str, statements: Vec<Statement<'static>>) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: FAMILY,
        table: TABLE.into(),
        chain: chain.into(),
        expr: statements.into(),
        ..Rule::default()
    })
}

/// `meta nfproto FAMILY tcp dport @ports tcp flags & (fin|syn|rst|ack) == ack ct state
/// invalid,untracked synproxy ...`: one rule per address family because the MSS differs.
fn synproxy_rule(nfproto: &'static str, mss: u16, wscale: u8) -> Vec<Statement<'static>> {
    vec![
        not_loopback(),
        matches(
            Expression::Named(NamedExpression::Meta(Meta {
                key: MetaKey::Nfproto,
            })),
            Expression::String(nfproto.into()),
        ),
        dport_protected(),
        only_flag("ack"),
        ct_state(Expression::List(vec![
            Expression::String("invalid".into()),
            Expression::String("untracked".into()),
        ])),
        Statement::SynProxy(SynProxy {
            mss: Some(u32::from(mss)),
            wscale: Some(u32::from(wscale)),
            flags: Some(HashSet::from([
                SynProxyFlag::Timestamp,
                SynProxyFlag::SackPerm,
            ])),
        }),
    ]
}

/// `tcp dport @ports`
fn dport_protected() -> Statement<'static> {
    matches(
        tcp_field("dport"),
        Expression::String(format!("@{PORTS_SET}").into()),
    )
}

/// `tcp flags & (fin|syn|rst|ack) == FLAG`: of the four, only FLAG is set, whatever
/// ECN/PSH/URG say.
fn only_flag(flag: &'static str) -> Statement<'static> {
    let mask = ["fin", "syn", "rst", "ack"]
        .into_iter()
        .map(|flag| Expression::String(flag.into()))
        .collect();
    matches(
        Expression::BinaryOperation(Box::new(BinaryOperation::AND(
            tcp_field("flags"),
            Expression::List(mask),
        ))),
        Expression::String(flag.into()),
    )
}

/// `iifname != "lo"`
fn not_loopback() -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Meta(Meta {
            key: MetaKey::Iifname,
        })),
        right: Expression::String("lo".into()),
        op: Operator::NEQ,
    })
}

/// `fib saddr type != local`
fn saddr_not_local() -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Fib(Fib {
            result: FibResult::Type,
            flags: HashSet::from([FibFlag::Saddr]),
        })),
        right: Expression::String("local".into()),
        op: Operator::NEQ,
    })
}

/// `ct state STATES`
fn ct_state(states: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::CT(CT {
            key: "state".into(),
            family: None,
            dir: None,
        })),
        right: states,
        op: Operator::IN,
    })
}

fn tcp_field(field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed("tcp"),
            field: field.into(),
        },
    )))
}

fn matches(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn number(port: u16) -> Expression<'static> {
    Expression::Number(u32::from(port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ruleset_json_is_what_nft_expects() {
        let ports = PortSet::new(&[8080..=8080, 9000..=9010]);
        let json = to_nft_json(&ruleset(&ports, &DatapathConfig::DEFAULT));
        let objects = json["nftables"].as_array().unwrap();
        assert_eq!(
            objects[0],
            json!({"create": {"table": {"family": "inet", "name": "synguard"}}})
        );
        assert_eq!(
            objects[1]["add"]["set"]["elem"],
            json!([8080, {"range": [9000, 9010]}])
        );
        assert_eq!(objects[1]["add"]["set"]["flags"], json!(["interval"]));
        assert_eq!(objects[2]["add"]["chain"]["prio"], json!(-300));
        assert_eq!(objects[2]["add"]["chain"]["hook"], json!("output"));
        assert_eq!(objects[3]["add"]["chain"]["hook"], json!("input"));

        let not_lo =
            json!({"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "lo"}});
        let output = &objects[4]["add"]["rule"]["expr"];
        assert_eq!(
            output[1],
            json!({"match": {"op": "==", "right": "ack", "left": {"&": [
                {"payload": {"protocol": "tcp", "field": "flags"}},
                ["fin", "syn", "rst", "ack"]
            ]}}})
        );
        assert_eq!(
            output[2],
            json!({"match": {"op": "!=", "right": "local",
                "left": {"fib": {"result": "type", "flags": ["saddr"]}}}})
        );
        assert_eq!(output[3], json!({"notrack": null}));

        let v4 = &objects[5]["add"]["rule"]["expr"];
        assert_eq!(v4[0], not_lo);
        assert_eq!(v4[1]["match"]["right"], json!("ipv4"));
        assert_eq!(v4[2]["match"]["right"], json!("@ports"));
        // Only pure ACKs reach synproxy: the same flag match as the output rule's.
        assert_eq!(v4[3], output[1]);
        assert_eq!(v4[4]["match"]["op"], json!("in"));
        assert_eq!(v4[5]["synproxy"]["mss"], json!(1460));
        assert_eq!(v4[5]["synproxy"]["wscale"], json!(7));
        let v6 = &objects[6]["add"]["rule"]["expr"];
        assert_eq!(v6[1]["match"]["right"], json!("ipv6"));
        assert_eq!(v6[3], output[1]);
        assert_eq!(v6[5]["synproxy"]["mss"], json!(1440));
        let drop = &objects[7]["add"]["rule"]["expr"];
        assert_eq!(drop[0], not_lo);
        assert_eq!(drop[3], json!({"drop": null}));
    }

    #[test]
    fn update_replaces_elements_and_input_rules_only() {
        let ports = PortSet::new(&[8080..=8081]);
        let config = DatapathConfig {
            mss4: 1400,
            ..DatapathConfig::DEFAULT
        };
        let json = to_nft_json(&update_batch(&ports, &config));
        let objects = json["nftables"].as_array().unwrap();
        assert_eq!(objects.len(), 6);
        assert_eq!(objects[0]["flush"]["set"]["name"], json!("ports"));
        assert_eq!(
            objects[1]["add"]["element"]["elem"],
            json!([{"range": [8080, 8081]}])
        );
        assert_eq!(objects[2]["flush"]["chain"]["name"], json!("input"));
        assert_eq!(
            objects[3]["add"]["rule"]["expr"][5]["synproxy"]["mss"],
            json!(1400)
        );
        assert!(!json.to_string().contains("delete"));
    }
}
