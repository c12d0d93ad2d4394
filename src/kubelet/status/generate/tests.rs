//! Tables ported from the kubelet (`kubelet_test.go`, `kubelet_pods_test.go`) plus keel's own
//! checks of the pieces around them.

use k8s_openapi::api::core::v1::{Container, PodCondition, PodReadinessGate, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::genericruntime::cri;
use crate::genericruntime::types::SyncErrorKind;

const TEST_ERROR: SyncErrorKind = SyncErrorKind::CrashLoopBackOff;

fn pod(uid: &str, name: &str, ns: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            uid: Some(uid.into()),
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(PodSpec::default()),
        status: Some(PodStatus::default()),
    }
}

fn named(names: &[&str]) -> Vec<Container> {
    names
        .iter()
        .map(|n| Container {
            name: n.to_string(),
            ..Default::default()
        })
        .collect()
}

/// A runtime instance with the kubelet tests' zero values (empty ID ⇒ container ID `://`).
fn rt(name: &str, state: RtState, exit_code: i32) -> RtContainerStatus {
    RtContainerStatus {
        id: String::new(),
        runtime_type: String::new(),
        name: name.into(),
        state,
        created_at: Timestamp::UNIX_EPOCH,
        started_at: None,
        finished_at: None,
        exit_code,
        image: String::new(),
        image_ref: String::new(),
        hash: 0,
        restart_count: 0,
        reason: String::new(),
        message: String::new(),
        sandbox_id: String::new(),
    }
}

const EMPTY_CONTAINER_ID: &str = "://";

fn terminated(code: i32) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            container_id: Some(EMPTY_CONTAINER_ID.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}
fn waiting_reason(r: &str) -> ContainerState {
    waiting(r, "")
}

fn generate(pod: &Pod, runtime: &RuntimePodStatus, reasons: &ReasonCache) -> PodStatus {
    generate_api_pod_status(&GenerateInput {
        pod,
        runtime,
        previous: None,
        reasons,
        probes: &NoProbeResults,
        node_ips: &[],
        now: Timestamp::from_second(1_700_000_000).unwrap(),
    })
}

type States = Vec<(&'static str, ContainerState)>;

fn verify(statuses: &[ContainerStatus], state: &States, last: &States, case: &str) {
    for s in statuses {
        let want = state.iter().find(|(n, _)| *n == s.name).map(|(_, st)| st.clone());
        assert_eq!(s.state, want, "{case}: state of {}", s.name);
        let want_last = last.iter().find(|(n, _)| *n == s.name).map(|(_, st)| st.clone());
        assert_eq!(s.last_state, want_last, "{case}: lastState of {}", s.name);
    }
}

struct ReasonCase {
    containers: Vec<Container>,
    statuses: Vec<RtContainerStatus>,
    reasons: Vec<&'static str>,
    old: Vec<ContainerStatus>,
    state: States,
    init_state: Option<States>,
    last: States,
}

#[test]
fn test_generate_api_pod_status_with_reason_cache() {
    let ts = Timestamp::from_second(123456789).unwrap();
    let cases = [
        // No historical record: Waiting; lastState from the old API status.
        ReasonCase {
            containers: named(&["without-old-record", "with-old-record"]),
            statuses: vec![],
            reasons: vec![],
            old: vec![ContainerStatus {
                name: "with-old-record".into(),
                last_state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated::default()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            state: vec![
                ("without-old-record", waiting_reason(CONTAINER_CREATING)),
                ("with-old-record", waiting_reason(CONTAINER_CREATING)),
            ],
            init_state: Some(vec![
                ("without-old-record", waiting_reason(POD_INITIALIZING)),
                ("with-old-record", waiting_reason(POD_INITIALIZING)),
            ]),
            last: vec![(
                "with-old-record",
                ContainerState {
                    terminated: Some(ContainerStateTerminated::default()),
                    ..Default::default()
                },
            )],
        },
        // Running: lastState from the latest terminated instance.
        ReasonCase {
            containers: named(&["running"]),
            statuses: vec![
                RtContainerStatus {
                    started_at: Some(ts),
                    ..rt("running", RtState::Running, 0)
                },
                rt("running", RtState::Exited, 1),
            ],
            reasons: vec![],
            old: vec![],
            state: vec![(
                "running",
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(ts)),
                    }),
                    ..Default::default()
                },
            )],
            init_state: None,
            last: vec![("running", terminated(1))],
        },
        // Terminated: without a start error Terminated (lastState the second newest); with one
        // Waiting (lastState the newest); exit 0 under OnFailure is never restarted.
        ReasonCase {
            containers: named(&["without-reason", "with-reason", "succeed"]),
            statuses: vec![
                rt("without-reason", RtState::Exited, 1),
                rt("with-reason", RtState::Exited, 2),
                rt("without-reason", RtState::Exited, 3),
                rt("with-reason", RtState::Exited, 4),
                rt("succeed", RtState::Exited, 0),
                rt("succeed", RtState::Exited, 5),
            ],
            reasons: vec!["with-reason", "succeed"],
            old: vec![],
            state: vec![
                ("without-reason", terminated(1)),
                ("with-reason", waiting_reason(TEST_ERROR.as_str())),
                ("succeed", terminated(0)),
            ],
            init_state: None,
            last: vec![
                ("without-reason", terminated(3)),
                ("with-reason", terminated(2)),
                ("succeed", terminated(5)),
            ],
        },
        // Unknown after Running: Terminated (ContainerStatusUnknown), not Waiting.
        ReasonCase {
            containers: named(&["unknown"]),
            statuses: vec![rt("unknown", RtState::Unknown, 0), rt("unknown", RtState::Running, 0)],
            reasons: vec![],
            old: vec![ContainerStatus {
                name: "unknown".into(),
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            state: vec![("unknown", unknown_terminated(MSG_UNKNOWN_TERMINATED))],
            init_state: None,
            last: vec![(
                "unknown",
                ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..Default::default()
                },
            )],
        },
    ];

    for (i, c) in cases.iter().enumerate() {
        let mut p = pod("12345678", "foo", "new");
        let reasons = ReasonCache::new();
        for n in &c.reasons {
            reasons.add("12345678", n, TEST_ERROR, String::new());
        }
        let runtime = RuntimePodStatus {
            uid: "12345678".into(),
            container_statuses: c.statuses.clone(),
            ..Default::default()
        };
        // Regular containers.
        p.spec = Some(PodSpec {
            restart_policy: Some("OnFailure".into()),
            containers: c.containers.clone(),
            ..Default::default()
        });
        p.status = Some(PodStatus {
            container_statuses: Some(c.old.clone()),
            ..Default::default()
        });
        let s = generate(&p, &runtime, &reasons);
        verify(
            s.container_statuses.as_deref().unwrap(),
            &c.state,
            &c.last,
            &format!("case {i}"),
        );

        // Everything is the same for init containers.
        p.spec = Some(PodSpec {
            restart_policy: Some("OnFailure".into()),
            init_containers: Some(c.containers.clone()),
            ..Default::default()
        });
        p.status = Some(PodStatus {
            init_container_statuses: Some(c.old.clone()),
            ..Default::default()
        });
        let s = generate(&p, &runtime, &reasons);
        let want = c.init_state.as_ref().unwrap_or(&c.state);
        verify(
            s.init_container_statuses.as_deref().unwrap(),
            want,
            &c.last,
            &format!("init case {i}"),
        );
    }
}

#[test]
fn test_generate_api_pod_status_with_different_restart_policies() {
    let p0 = pod("12345678", "foo", "new");
    let runtime = RuntimePodStatus {
        uid: "12345678".into(),
        container_statuses: vec![
            rt("succeed", RtState::Exited, 0),
            rt("failed", RtState::Exited, 1),
            rt("succeed", RtState::Exited, 2),
            rt("failed", RtState::Exited, 3),
        ],
        ..Default::default()
    };
    let reasons = ReasonCache::new();
    reasons.add("12345678", "succeed", TEST_ERROR, String::new());
    reasons.add("12345678", "failed", TEST_ERROR, String::new());
    let w = || waiting_reason(TEST_ERROR.as_str());
    type Case = (&'static str, States, States, Option<States>, Option<States>);
    let cases: Vec<Case> = vec![
        (
            "Never",
            vec![("succeed", terminated(0)), ("failed", terminated(1))],
            vec![("succeed", terminated(2)), ("failed", terminated(3))],
            None,
            None,
        ),
        (
            "OnFailure",
            vec![("succeed", terminated(0)), ("failed", w())],
            vec![("succeed", terminated(2)), ("failed", terminated(1))],
            None,
            None,
        ),
        (
            "Always",
            vec![("succeed", w()), ("failed", w())],
            vec![("succeed", terminated(0)), ("failed", terminated(1))],
            // An init container that exited 0 is not restarted even under Always.
            Some(vec![("succeed", terminated(0)), ("failed", w())]),
            Some(vec![("succeed", terminated(2)), ("failed", terminated(1))]),
        ),
    ];
    for (policy, state, last, init_state, init_last) in cases {
        let mut p = p0.clone();
        p.spec = Some(PodSpec {
            restart_policy: Some(policy.into()),
            containers: named(&["succeed", "failed"]),
            ..Default::default()
        });
        let s = generate(&p, &runtime, &reasons);
        verify(s.container_statuses.as_deref().unwrap(), &state, &last, policy);

        p.spec = Some(PodSpec {
            restart_policy: Some(policy.into()),
            init_containers: Some(named(&["succeed", "failed"])),
            ..Default::default()
        });
        let s = generate(&p, &runtime, &reasons);
        verify(
            s.init_container_statuses.as_deref().unwrap(),
            init_state.as_ref().unwrap_or(&state),
            init_last.as_ref().unwrap_or(&last),
            &format!("init {policy}"),
        );
    }
}

fn running_state(n: &str) -> ContainerStatus {
    ContainerStatus {
        name: n.into(),
        state: Some(ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn waiting_with_last_termination_unknown(n: &str, restart_count: i32) -> ContainerStatus {
    ContainerStatus {
        name: n.into(),
        state: Some(waiting_reason(CONTAINER_CREATING)),
        last_state: Some(unknown_terminated(MSG_UNKNOWN_DELETED)),
        restart_count,
        ..Default::default()
    }
}

#[test]
fn test_convert_to_api_container_statuses() {
    let spec = PodSpec {
        node_name: Some("machine".into()),
        containers: named(&["containerA", "containerB"]),
        restart_policy: Some("Always".into()),
        ..Default::default()
    };
    let previous = vec![running_state("containerA"), running_state("containerB")];
    let cases = [
        ("no current status, with previous statuses and deletion", true, 0),
        ("no current status, with previous statuses and no deletion", false, 1),
    ];
    for (name, deleted, restarts) in cases {
        let mut p = pod("uid", "my-pod", "default");
        p.spec = Some(spec.clone());
        if deleted {
            p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        }
        let containers: Vec<SpecContainer<'_>> = spec
            .containers
            .iter()
            .map(|c| SpecContainer {
                name: &c.name,
                image: "",
            })
            .collect();
        let got = convert_to_api_container_statuses(
            &p,
            &RuntimePodStatus::default(),
            &previous,
            &containers,
            false,
            Kind::Regular,
            &ReasonCache::new(),
        );
        assert_eq!(
            got,
            vec![
                waiting_with_last_termination_unknown("containerA", restarts),
                waiting_with_last_termination_unknown("containerB", restarts),
            ],
            "[test {name}]"
        );
    }
}

// ---- keel's own checks of the rest of §2.6 ----

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn sandbox(ready: bool) -> cri::PodSandboxStatus {
    cri::PodSandboxStatus {
        id: "sb".into(),
        state: if ready {
            cri::PodSandboxState::SandboxReady as i32
        } else {
            cri::PodSandboxState::SandboxNotready as i32
        },
        ..Default::default()
    }
}

fn running_rt(name: &str, id: &str) -> RtContainerStatus {
    RtContainerStatus {
        id: id.into(),
        runtime_type: "sim".into(),
        image: "busybox".into(),
        image_ref: "sha256:abc".into(),
        restart_count: 2,
        started_at: Some(Timestamp::from_second(1_600_000_000).unwrap()),
        ..rt(name, RtState::Running, 0)
    }
}

fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
    s.conditions.iter().flatten().find(|c| c.type_ == t).unwrap()
}

#[test]
fn running_pod_full_status() {
    let mut p = pod("u1", "web", "default");
    let mut containers = named(&["web", "probed"]);
    containers[1].readiness_probe = Some(Probe::default());
    p.spec = Some(PodSpec {
        containers,
        readiness_gates: Some(vec![PodReadinessGate {
            condition_type: "example.com/gate".into(),
        }]),
        ..Default::default()
    });
    p.status = Some(PodStatus {
        conditions: Some(vec![PodCondition {
            type_: "example.com/gate".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let runtime = RuntimePodStatus {
        uid: "u1".into(),
        ips: vec!["fd00::5".into(), "10.0.0.5".into(), "10.0.0.6".into()],
        container_statuses: vec![running_rt("web", "c1"), running_rt("probed", "c2")],
        sandbox_statuses: vec![sandbox(true)],
        ..Default::default()
    };

    struct Ready(bool);
    impl ProbeResults for Ready {
        fn readiness(&self, id: &str) -> Option<bool> {
            (id == "sim://c2").then_some(self.0)
        }
        fn startup(&self, _: &str) -> Option<bool> {
            None
        }
    }
    let gen = |probe: bool, previous: Option<&PodStatus>, at: Timestamp| {
        generate_api_pod_status(&GenerateInput {
            pod: &p,
            runtime: &runtime,
            previous,
            reasons: &ReasonCache::new(),
            probes: &Ready(probe),
            node_ips: &["192.168.1.10".to_string()],
            now: at,
        })
    };
    let s = gen(false, None, now());
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.5"));
    let ips: Vec<&str> = s.pod_ips.iter().flatten().map(|i| i.ip.as_str()).collect();
    assert_eq!(ips, ["10.0.0.5", "fd00::5"]);
    assert_eq!(s.host_ip.as_deref(), Some("192.168.1.10"));
    assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
    assert_eq!(s.start_time, Some(Time(now())));
    let cs = s.container_statuses.as_deref().unwrap();
    assert_eq!(cs[0].name, "probed", "sorted by name");
    assert!(!cs[0].ready, "readiness probe without a result");
    assert_eq!(cs[1].container_id.as_deref(), Some("sim://c1"));
    assert_eq!(cs[1].image_id, "sha256:abc");
    assert_eq!(cs[1].restart_count, 2);
    assert_eq!(cs[1].started, Some(true));
    assert!(cs[1].ready);
    let types: Vec<&str> = s.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        [
            "example.com/gate",
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled"
        ]
    );
    assert_eq!(cond(&s, "Ready").status, "False");
    assert_eq!(cond(&s, "PodReadyToStartContainers").status, "True");

    // Later, the probe succeeds: Ready flips and gets a new transition time; the others keep
    // theirs, and startTime stays.
    let later = Timestamp::from_second(1_700_000_100).unwrap();
    let s2 = gen(true, Some(&s), later);
    assert_eq!(cond(&s2, "Ready").status, "True");
    assert_eq!(cond(&s2, "Ready").last_transition_time, Some(Time(later)));
    assert_eq!(cond(&s2, "PodScheduled").last_transition_time, Some(Time(now())));
    assert_eq!(s2.start_time, Some(Time(now())));
}

#[test]
fn terminal_phase_and_admission_reason_stick() {
    let mut p = pod("u1", "web", "default");
    p.spec = Some(PodSpec {
        containers: named(&["web"]),
        ..Default::default()
    });
    let rejected = PodStatus {
        phase: Some("Failed".into()),
        reason: Some("OutOfcpu".into()),
        message: Some("Pod was rejected: insufficient cpu".into()),
        ..Default::default()
    };
    let s = generate_api_pod_status(&GenerateInput {
        pod: &p,
        runtime: &RuntimePodStatus::default(),
        previous: Some(&rejected),
        reasons: &ReasonCache::new(),
        probes: &NoProbeResults,
        node_ips: &[],
        now: now(),
    });
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    assert_eq!(s.reason.as_deref(), Some("OutOfcpu"));
    assert_eq!(s.message, rejected.message);

    // The API shows Succeeded: a computed Running may not replace it.
    p.status = Some(PodStatus {
        phase: Some("Succeeded".into()),
        ..Default::default()
    });
    let runtime = RuntimePodStatus {
        container_statuses: vec![running_rt("web", "c1")],
        ..Default::default()
    };
    let s = generate(&p, &runtime, &ReasonCache::new());
    assert_eq!(s.phase.as_deref(), Some("Succeeded"));
}

#[test]
fn host_network_pods_get_node_ips() {
    let mut p = pod("u1", "web", "default");
    p.spec = Some(PodSpec {
        containers: named(&["web"]),
        host_network: Some(true),
        ..Default::default()
    });
    let node_ips = ["10.1.1.1".to_string(), "fd00::1".to_string()];
    let s = generate_api_pod_status(&GenerateInput {
        pod: &p,
        runtime: &RuntimePodStatus::default(),
        previous: None,
        reasons: &ReasonCache::new(),
        probes: &NoProbeResults,
        node_ips: &node_ips,
        now: now(),
    });
    assert_eq!(s.pod_ip.as_deref(), Some("10.1.1.1"));
    let ips: Vec<&str> = s.pod_ips.iter().flatten().map(|i| i.ip.as_str()).collect();
    assert_eq!(ips, ["10.1.1.1", "fd00::1"]);
    let host: Vec<&str> = s.host_ips.iter().flatten().map(|i| i.ip.as_str()).collect();
    assert_eq!(host, ["10.1.1.1", "fd00::1"]);
    assert_eq!(cond(&s, "PodReadyToStartContainers").status, "False");
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let w = s.container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap();
    assert_eq!(w.reason.as_deref(), Some(CONTAINER_CREATING));
}

#[test]
fn pod_ips_follow_an_ipv6_node() {
    let ips = ["10.0.0.1".to_string(), "fd00::1".to_string(), "fd00::2".to_string()];
    assert_eq!(sort_pod_ips(&ips, &["fd00::9".into()]), ["fd00::1", "10.0.0.1"]);
    assert_eq!(sort_pod_ips(&ips, &[]), ["10.0.0.1", "fd00::1"]);
    assert_eq!(sort_pod_ips(&["bogus".into()], &[]), Vec::<String>::new());
}

#[test]
fn init_containers_ready_and_reason_cache_waiting() {
    let mut p = pod("u1", "web", "default");
    p.spec = Some(PodSpec {
        init_containers: Some(named(&["init"])),
        containers: named(&["web"]),
        ..Default::default()
    });
    let runtime = RuntimePodStatus {
        container_statuses: vec![rt("init", RtState::Exited, 0)],
        sandbox_statuses: vec![sandbox(true)],
        ..Default::default()
    };
    let reasons = ReasonCache::new();
    reasons.add("u1", "web", SyncErrorKind::ErrImagePull, "pull failed".into());
    let s = generate(&p, &runtime, &reasons);
    let init = &s.init_container_statuses.as_ref().unwrap()[0];
    assert!(init.ready);
    assert_eq!(cond(&s, "Initialized").status, "True");
    let web = &s.container_statuses.as_ref().unwrap()[0];
    let w = web.state.clone().unwrap().waiting.unwrap();
    assert_eq!(
        (w.reason.as_deref(), w.message.as_deref()),
        (Some("ErrImagePull"), Some("pull failed"))
    );
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let cr = cond(&s, "ContainersReady");
    assert_eq!(cr.message.as_deref(), Some("containers with unready status: [web]"));
}

#[test]
fn normalize_truncates_messages_and_timestamps() {
    let mut p = pod("u1", "web", "default");
    p.spec = Some(PodSpec {
        containers: named(&["b", "a", "c", "d"]),
        ..Default::default()
    });
    let frac = Timestamp::new(1_700_000_000, 987_654_321).unwrap();
    let long = "é".repeat(3000); // 6000 bytes, two-byte chars
    let mut s = PodStatus {
        start_time: Some(Time(frac)),
        container_statuses: Some(vec![
            ContainerStatus {
                name: "b".into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        message: Some(long),
                        finished_at: Some(Time(frac)),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ContainerStatus {
                name: "a".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    normalize_status(&p, &mut s);
    assert_eq!(s.start_time, Some(Time(Timestamp::from_second(1_700_000_000).unwrap())));
    let cs = s.container_statuses.unwrap();
    assert_eq!(cs[0].name, "a");
    let t = cs[1].state.clone().unwrap().terminated.unwrap();
    // 12288 / 4 containers = 3072 bytes.
    assert_eq!(t.message.unwrap().len(), 3072);
    assert_eq!(t.finished_at.unwrap().0.subsec_nanosecond(), 0);
}

#[test]
fn test_generate_api_pod_status_with_sorted_containers() {
    let mut p = pod("u1", "web", "default");
    let names: Vec<String> = (0..10).rev().map(|i| format!("container{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    p.spec = Some(PodSpec {
        containers: named(&refs),
        ..Default::default()
    });
    let runtime = RuntimePodStatus {
        container_statuses: names.iter().map(|n| running_rt(n, n)).collect(),
        ..Default::default()
    };
    let s = generate(&p, &runtime, &ReasonCache::new());
    let got: Vec<&str> = s.container_statuses.iter().flatten().map(|c| c.name.as_str()).collect();
    let mut want = refs.clone();
    want.sort();
    assert_eq!(got, want);
}

/// `TestGenerateAPIPodStatusHostNetworkPodIPs`, with the node's IPs already chosen from its
/// addresses (that choice is node status's job in keel).
#[test]
fn test_generate_api_pod_status_host_network_pod_ips() {
    type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
    let cases: [Case; 4] = [
        ("Simple", &["10.0.0.1"], &[], &["10.0.0.1"]),
        (
            "Dual-stack addresses in dual-stack cluster",
            &["10.0.0.1", "fd01::1234"],
            &[],
            &["10.0.0.1", "fd01::1234"],
        ),
        (
            "CRI PodIPs override NodeAddresses",
            &["10.0.0.1", "fd01::1234"],
            &["192.168.0.1"],
            &["192.168.0.1", "fd01::1234"],
        ),
        (
            "CRI dual-stack PodIPs override NodeAddresses",
            &["10.0.0.1", "fd01::1234"],
            &["192.168.0.1", "2001:db8::2"],
            &["192.168.0.1", "2001:db8::2"],
        ),
    ];
    for (name, node_ips, cri_ips, want) in cases {
        let mut p = pod("u1", "hostnet", "default");
        p.spec = Some(PodSpec {
            containers: named(&["c"]),
            host_network: Some(true),
            ..Default::default()
        });
        let runtime = RuntimePodStatus {
            ips: cri_ips.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let node_ips: Vec<String> = node_ips.iter().map(|s| s.to_string()).collect();
        let s = generate_api_pod_status(&GenerateInput {
            pod: &p,
            runtime: &runtime,
            previous: None,
            reasons: &ReasonCache::new(),
            probes: &NoProbeResults,
            node_ips: &node_ips,
            now: now(),
        });
        let got: Vec<&str> = s.pod_ips.iter().flatten().map(|i| i.ip.as_str()).collect();
        assert_eq!(got, want, "[test {name}]");
        assert_eq!(s.pod_ip.as_deref(), want.first().copied(), "[test {name}]");
    }
}
