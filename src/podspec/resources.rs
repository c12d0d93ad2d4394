//! Resource quantities (`100m`, `64Mi`, `1e3`), pod requests and QoS class, as the API defines
//! them. Values are kept in milli-units (`i128`) so cpu and bytes share one exact type.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A quantity string that is not a Kubernetes quantity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {0:?}")]
pub struct QuantityError(pub String);

/// Parses a quantity into milli-units, rounding up like `Quantity.MilliValue()`.
pub fn parse_milli(s: &str) -> Result<i128, QuantityError> {
    let err = || QuantityError(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(err());
    }
    let (sign, t) = match t.as_bytes()[0] {
        b'-' => (-1i128, &t[1..]),
        b'+' => (1, &t[1..]),
        _ => (1, t),
    };
    let num_end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, suffix) = t.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return Err(err());
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    // Value as an exact fraction: mantissa / 10^frac_len.
    let digits = format!("{int_part}{frac_part}");
    if digits.len() > 30 {
        return Err(err());
    }
    let mantissa: i128 = digits.parse().map_err(|_| err())?;
    let frac_len = frac_part.len() as u32;
    // (multiplier numerator, power of ten) for the suffix.
    let (mul, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        s if s.starts_with('e') || s.starts_with('E') => {
            let e: i32 = s[1..].parse().map_err(|_| err())?;
            if !(-30..=30).contains(&e) {
                return Err(err());
            }
            (1, e)
        }
        _ => return Err(err()),
    };
    // milli = mantissa * mul * 10^(exp10 + 3 - frac_len), rounded up.
    let p = exp10 + 3 - frac_len as i32;
    let base = mantissa.checked_mul(mul).ok_or_else(err)?;
    let v = if p >= 0 {
        base.checked_mul(10i128.checked_pow(p as u32).ok_or_else(err)?)
            .ok_or_else(err)?
    } else {
        let d = 10i128.checked_pow((-p) as u32).ok_or_else(err)?;
        (base + d - 1) / d
    };
    Ok(sign * v)
}

/// Parses a quantity into whole units, rounding up (`Quantity.Value()`).
pub fn parse_value(s: &str) -> Result<i128, QuantityError> {
    let m = parse_milli(s)?;
    Ok(if m >= 0 { (m + 999) / 1000 } else { m / 1000 })
}

/// Milli-units of a resource in a map, 0 when absent or unparseable.
pub fn milli_of(map: Option<&BTreeMap<String, Quantity>>, name: &str) -> i128 {
    map.and_then(|m| m.get(name))
        .and_then(|q| parse_milli(&q.0).ok())
        .unwrap_or(0)
}

fn requests_of(r: Option<&ResourceRequirements>) -> Option<&BTreeMap<String, Quantity>> {
    r.and_then(|r| r.requests.as_ref())
}

fn limits_of(r: Option<&ResourceRequirements>) -> Option<&BTreeMap<String, Quantity>> {
    r.and_then(|r| r.limits.as_ref())
}

/// A container's effective request for a resource: the request, else the limit (API defaulting
/// copies limits into absent requests).
pub fn container_request_milli(c: &Container, name: &str) -> i128 {
    let r = c.resources.as_ref();
    match requests_of(r).and_then(|m| m.get(name)) {
        Some(q) => parse_milli(&q.0).unwrap_or(0),
        None => milli_of(limits_of(r), name),
    }
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's effective request (milli-units): max(sum of containers + sidecars, the largest
/// init-time peak) plus overhead — the rule admission and the scheduler use.
pub fn pod_request_milli(spec: &PodSpec, name: &str) -> i128 {
    let mut sum: i128 = spec.containers.iter().map(|c| container_request_milli(c, name)).sum();
    let mut init_peak: i128 = 0;
    let mut sidecars: i128 = 0;
    for c in spec.init_containers.iter().flatten() {
        let r = container_request_milli(c, name);
        if is_sidecar(c) {
            sidecars += r;
            init_peak = init_peak.max(sidecars);
        } else {
            init_peak = init_peak.max(sidecars + r);
        }
    }
    sum += sidecars;
    let overhead = milli_of(spec.overhead.as_ref(), name);
    sum.max(init_peak) + overhead
}

/// QoS class (`Guaranteed`, `Burstable`, `BestEffort`), per the API's `GetPodQOS`.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    const SUPPORTED: [&str; 2] = ["cpu", "memory"];
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    let all = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    for c in all {
        let r = c.resources.as_ref();
        for res in SUPPORTED {
            if let Some(q) = requests_of(r).and_then(|m| m.get(res)) {
                let v = parse_milli(&q.0).unwrap_or(0);
                if v != 0 {
                    *requests.entry(res).or_default() += v;
                }
            }
        }
        let mut limited = 0;
        for res in SUPPORTED {
            if let Some(q) = limits_of(r).and_then(|m| m.get(res)) {
                let v = parse_milli(&q.0).unwrap_or(0);
                if v != 0 {
                    limited += 1;
                    *limits.entry(res).or_default() += v;
                }
            }
        }
        if limited != SUPPORTED.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed {
        // Absent requests default to limits (API defaulting), so only explicit differences count.
        let differs = requests.iter().any(|(k, v)| limits.get(k) != Some(v));
        if !differs {
            return "Guaranteed";
        }
    }
    "Burstable"
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    #[test]
    fn quantities() {
        let cases: &[(&str, i128)] = &[
            ("1", 1000),
            ("100m", 100),
            ("1.5", 1500),
            ("0.1", 100),
            ("1k", 1_000_000),
            ("64Mi", 64 * 1024 * 1024 * 1000),
            ("1Gi", (1i128 << 30) * 1000),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("5n", 1),
            ("250m", 250),
            ("1250m", 1250),
            ("-1", -1000),
            ("0", 0),
        ];
        for (s, want) in cases {
            assert_eq!(parse_milli(s), Ok(*want), "{s}");
        }
        for bad in ["", "abc", "1.2.3", "1Xi", "m", "1e99", "."] {
            assert!(parse_milli(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_value("1500m"), Ok(2));
        assert_eq!(parse_value("64Mi"), Ok(67108864));
    }

    fn container(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Container {
        let m = |v: &[(&str, &str)]| {
            if v.is_empty() {
                None
            } else {
                Some(
                    v.iter()
                        .map(|(k, q)| (k.to_string(), Quantity(q.to_string())))
                        .collect(),
                )
            }
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: m(req),
                limits: m(lim),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn qos_classes() {
        let spec = |cs: Vec<Container>| PodSpec {
            containers: cs,
            ..Default::default()
        };
        assert_eq!(qos_class(&spec(vec![container(&[], &[])])), "BestEffort");
        assert_eq!(
            qos_class(&spec(vec![container(
                &[("cpu", "1"), ("memory", "1Gi")],
                &[("cpu", "1"), ("memory", "1Gi")]
            )])),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&spec(vec![container(&[], &[("cpu", "1"), ("memory", "1Gi")])])),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&spec(vec![container(
                &[("cpu", "500m")],
                &[("cpu", "1"), ("memory", "1Gi")]
            )])),
            "Burstable"
        );
        assert_eq!(qos_class(&spec(vec![container(&[("cpu", "1")], &[])])), "Burstable");
        assert_eq!(
            qos_class(&spec(vec![
                container(&[("cpu", "1"), ("memory", "1Gi")], &[("cpu", "1"), ("memory", "1Gi")]),
                container(&[], &[])
            ])),
            "Burstable"
        );
    }

    #[test]
    fn pod_requests_take_init_peak() {
        let mut spec = PodSpec {
            containers: vec![container(&[("cpu", "100m")], &[])],
            ..Default::default()
        };
        spec.init_containers = Some(vec![container(&[("cpu", "500m")], &[])]);
        assert_eq!(pod_request_milli(&spec, "cpu"), 500);
        let mut sidecar = container(&[("cpu", "200m")], &[]);
        sidecar.restart_policy = Some("Always".into());
        spec.init_containers = Some(vec![sidecar, container(&[("cpu", "500m")], &[])]);
        // sidecar 200 + init 500 = 700 peak; steady 100 + 200 = 300.
        assert_eq!(pod_request_milli(&spec, "cpu"), 700);
    }
}
