//! The cluster-primary side of prom-client's `AggregatorRegistry` (prom-client's
//! lib/cluster.js and lib/metricAggregators.js), pure: the request the primary sends every
//! worker, the reply it reads back, the aggregation and its exposition.
//!
//! In Node the primary sends each worker `{type: 'prom-client:getMetricsReq', requestId}`;
//! a worker that constructed an `AggregatorRegistry` answers
//! `{type: 'prom-client:getMetricsRes', requestId, metrics}` (`metrics`: one array per
//! registry of `registry.getMetricsAsJSON()`, each metric `{name, help, type, values,
//! aggregator}`, each value `{value, labels, metricName?}`) or `{..., error}`. The primary
//! groups metrics by name and, within a name, values by `metricName` and labels, and
//! combines each group with the metric's `aggregator`: `sum` (the default), `first`, `min`,
//! `max`, `average`, or `omit` (left out). Under Corral the daemon is the primary, so the
//! aggregate of every app is served on the daemon's `/metrics`, each sample labelled with
//! its `app`.
//!
//! Where prom-client throws on the whole aggregation (an unknown aggregator), only that
//! metric is left out here.

use super::expo::{Kind, Writer};
use node_ipc::Value;

pub const REQUEST_TYPE: &str = "prom-client:getMetricsReq";
pub const REPLY_TYPE: &str = "prom-client:getMetricsRes";

/// Samples read from one reply at most (a worker's reply is already bounded by the IPC
/// channel's frame limit; this bounds the work of aggregating it).
const MAX_SAMPLES_PER_REPLY: usize = 200_000;

/// The request sent to every worker.
pub fn request(request_id: u64) -> Value {
    Value::object([("type", Value::from(REQUEST_TYPE)), ("requestId", Value::number(request_id as f64))])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub metric_name: Option<String>,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub help: String,
    pub kind: String,
    pub aggregator: String,
    pub values: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub request_id: Option<u64>,
    /// The worker's metrics (every registry's, in order), or the error it reported.
    pub metrics: Result<Vec<Metric>, String>,
}

/// A label value as prom-client prints it (`${value}`).
fn js_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.as_str().to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Int(_) | Value::Double(_) => v.as_f64().map(js_number),
        _ => None,
    }
}

/// A number as JavaScript's `String(n)` prints it (integers without a fraction).
pub fn js_number(n: f64) -> String {
    if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if n.fract() == 0.0 && n.abs() < 1e21 {
        format!("{}", n as i128)
    } else {
        format!("{n}")
    }
}

/// The elements of an array, packed or holey: V8 serializes arrays that were ever holey
/// (prom-client's `Object.values(hashMap)`, say) as sparse, index keys with the values.
fn elements(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::SparseArray { props, .. }) => {
            let mut e: Vec<(u32, &Value)> =
                props.iter().filter_map(|(k, v)| Some((k.as_str().parse::<u32>().ok()?, v))).collect();
            e.sort_by_key(|(i, _)| *i);
            e.into_iter().map(|(_, v)| v).collect()
        }
        Some(v) => v.as_array().map(|a| a.iter().collect()).unwrap_or_default(),
        None => Vec::new(),
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(|v| v.as_str()).map(String::from)
}

/// Reads a worker's message; `None` when it is not a prom-client reply.
pub fn parse_reply(v: &Value) -> Option<Reply> {
    if v.get("type").and_then(|t| t.as_str()) != Some(REPLY_TYPE) {
        return None;
    }
    let request_id = v.get("requestId").and_then(|r| r.as_i64()).and_then(|r| u64::try_from(r).ok());
    if let Some(e) = v.get("error").filter(|e| !e.is_undefined() && !e.is_null()) {
        let msg = js_string(e).unwrap_or_else(|| "error".into());
        return Some(Reply { request_id, metrics: Err(msg) });
    }
    let registries = elements(v.get("metrics"));
    if registries.is_empty() && v.get("metrics").and_then(|m| m.as_array()).is_none() {
        return Some(Reply { request_id, metrics: Err("reply without metrics".into()) });
    }
    let mut out = Vec::new();
    let mut budget = MAX_SAMPLES_PER_REPLY;
    for reg in registries {
        for m in elements(Some(reg)) {
            if let Some(m) = parse_metric(m, &mut budget) {
                out.push(m);
            }
        }
    }
    Some(Reply { request_id, metrics: Ok(out) })
}

fn parse_metric(m: &Value, budget: &mut usize) -> Option<Metric> {
    let name = text(m.get("name"))?;
    let mut values = Vec::new();
    for v in elements(m.get("values")) {
        if *budget == 0 {
            break;
        }
        // prom-client stores non-numbers as 0; a value that is no number at all is skipped.
        let Some(value) = v.get("value").and_then(|x| x.as_f64()) else { continue };
        *budget -= 1;
        let labels = match v.get("labels").and_then(|l| l.as_object()) {
            Some(props) => {
                props.iter().filter_map(|(k, v)| Some((k.as_str().to_string(), js_string(v)?))).collect()
            }
            None => Vec::new(),
        };
        values.push(Sample { metric_name: text(v.get("metricName")), labels, value });
    }
    Some(Metric {
        help: text(m.get("help")).unwrap_or_default(),
        kind: text(m.get("type")).unwrap_or_else(|| "untyped".into()),
        aggregator: text(m.get("aggregator")).unwrap_or_else(|| "sum".into()),
        name,
        values,
    })
}

/// prom-client's `hashObject`: label names sorted, `name:value,` each.
fn label_key(labels: &[(String, String)]) -> String {
    let mut l: Vec<&(String, String)> = labels.iter().collect();
    l.sort_by(|a, b| a.0.cmp(&b.0));
    let mut s = String::new();
    for (k, v) in l {
        s.push_str(k);
        s.push(':');
        s.push_str(v);
        s.push(',');
    }
    s
}

/// `AggregatorRegistry.aggregate`: metrics of every worker of one app in, one metric per
/// name out (in order of first appearance).
pub fn aggregate(metrics: Vec<Metric>) -> Vec<Metric> {
    let mut by_name: Vec<(String, Vec<Metric>)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for m in metrics {
        match index.get(&m.name) {
            Some(&i) => {
                let slot: &mut (String, Vec<Metric>) = &mut by_name[i];
                slot.1.push(m);
            }
            None => {
                index.insert(m.name.clone(), by_name.len());
                by_name.push((m.name.clone(), vec![m]));
            }
        }
    }
    by_name.into_iter().filter_map(|(_, ms)| aggregate_one(ms)).collect()
}

fn aggregate_one(ms: Vec<Metric>) -> Option<Metric> {
    let first = ms.first()?;
    let agg = first.aggregator.clone();
    let f: fn(&[f64]) -> f64 = match agg.as_str() {
        "sum" => |v| v.iter().sum(),
        "first" => |v| v[0],
        "min" => |v| v.iter().copied().fold(f64::INFINITY, f64::min),
        "max" => |v| v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "average" => |v| v.iter().sum::<f64>() / v.len() as f64,
        _ => return None, // "omit", or an aggregator prom-client does not define
    };
    // (metricName, labels, the values of every worker)
    type Group = (Option<String>, Vec<(String, String)>, Vec<f64>);
    let mut groups: Vec<Group> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for m in &ms {
        for s in &m.values {
            let key = format!("{}_{}", s.metric_name.as_deref().unwrap_or("undefined"), label_key(&s.labels));
            match index.get(&key) {
                Some(&i) => {
                    let g: &mut Group = &mut groups[i];
                    g.2.push(s.value);
                }
                None => {
                    index.insert(key, groups.len());
                    groups.push((s.metric_name.clone(), s.labels.clone(), vec![s.value]));
                }
            }
        }
    }
    Some(Metric {
        name: first.name.clone(),
        help: first.help.clone(),
        kind: first.kind.clone(),
        aggregator: agg,
        values: groups
            .into_iter()
            .map(|(metric_name, labels, vals)| Sample { metric_name, labels, value: f(&vals) })
            .collect(),
    })
}

/// Writes the aggregated metrics of every app, one family per name (the first app's help
/// and type; an app whose metric of that name has another type is left out of it), each
/// sample labelled `app` (unless it has an `app` label of its own). Names the writer already
/// used (the daemon's own) are skipped.
pub fn write(w: &mut Writer, apps: &[(String, Vec<Metric>)]) {
    let mut order: Vec<&str> = Vec::new();
    for (_, ms) in apps {
        for m in ms {
            if !order.contains(&m.name.as_str()) {
                order.push(&m.name);
            }
        }
    }
    for name in order {
        let mut members =
            apps.iter().flat_map(|(app, ms)| ms.iter().filter(|m| m.name == name).map(move |m| (app, m)));
        let Some((_, head)) = members.next() else { continue };
        let kind = Kind::parse(&head.kind).unwrap_or(Kind::Untyped);
        if w.has_family(name) || !w.family(name, &head.help, kind) {
            continue;
        }
        for (app, m) in
            apps.iter().flat_map(|(app, ms)| ms.iter().filter(|m| m.name == name).map(move |m| (app, m)))
        {
            if m.kind != head.kind {
                continue;
            }
            for s in &m.values {
                let mut labels: Vec<(&str, &str)> =
                    s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                if !labels.iter().any(|(k, _)| *k == "app") {
                    labels.push(("app", app));
                }
                w.sample(s.metric_name.as_deref().unwrap_or(name), &labels, s.value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(pairs: Vec<(&str, Value)>) -> Value {
        Value::object(pairs)
    }

    fn counter(name: &str, agg: Option<&str>, values: Vec<Value>) -> Value {
        let mut p = vec![
            ("name", Value::from(name)),
            ("help", Value::from("Hits.")),
            ("type", Value::from("counter")),
            ("values", Value::Array(values)),
        ];
        if let Some(a) = agg {
            p.push(("aggregator", Value::from(a)));
        }
        obj(p)
    }

    fn val(v: f64, labels: Vec<(&str, Value)>) -> Value {
        obj(vec![("value", Value::number(v)), ("labels", obj(labels))])
    }

    fn reply(id: i32, metrics: Vec<Value>) -> Value {
        obj(vec![
            ("type", Value::from(REPLY_TYPE)),
            ("requestId", Value::from(id)),
            ("metrics", Value::Array(vec![Value::Array(metrics)])),
        ])
    }

    fn parsed(v: &Value) -> Vec<Metric> {
        parse_reply(v).and_then(|r| r.metrics.ok()).unwrap_or_default()
    }

    #[test]
    fn request_shape() {
        let r = request(7);
        assert_eq!(r.get("type").and_then(|t| t.as_str()), Some(REQUEST_TYPE));
        assert_eq!(r.get("requestId").and_then(|t| t.as_i64()), Some(7));
    }

    #[test]
    fn not_a_reply_and_error_replies() {
        assert_eq!(parse_reply(&Value::from("ready")), None);
        assert_eq!(parse_reply(&obj(vec![("type", Value::from("process:msg"))])), None);
        let e = obj(vec![
            ("type", Value::from(REPLY_TYPE)),
            ("requestId", Value::from(3)),
            ("error", Value::from("boom")),
        ]);
        assert_eq!(parse_reply(&e), Some(Reply { request_id: Some(3), metrics: Err("boom".into()) }));
        let junk = obj(vec![("type", Value::from(REPLY_TYPE)), ("metrics", Value::from(5))]);
        assert!(parse_reply(&junk).is_some_and(|r| r.metrics.is_err()));
    }

    #[test]
    fn sums_by_labels_across_workers() {
        let w1 =
            reply(1, vec![counter("hits_total", None, vec![val(2.0, vec![("code", Value::from(200))])])]);
        let w2 = reply(
            1,
            vec![counter(
                "hits_total",
                None,
                vec![val(3.0, vec![("code", Value::from(200))]), val(1.0, vec![("code", Value::from(500))])],
            )],
        );
        let mut all = parsed(&w1);
        all.extend(parsed(&w2));
        let agg = aggregate(all);
        assert_eq!(agg.len(), 1);
        let v: Vec<(String, f64)> = agg[0].values.iter().map(|s| (s.labels[0].1.clone(), s.value)).collect();
        assert_eq!(v, vec![("200".into(), 5.0), ("500".into(), 1.0)]);
    }

    #[test]
    fn every_aggregator() {
        let mk = |agg: &str, a: f64, b: f64| {
            let mut all = parsed(&reply(1, vec![counter("m", Some(agg), vec![val(a, vec![])])]));
            all.extend(parsed(&reply(1, vec![counter("m", Some(agg), vec![val(b, vec![])])])));
            aggregate(all).first().map(|m| m.values[0].value)
        };
        assert_eq!(mk("sum", 1.0, 4.0), Some(5.0));
        assert_eq!(mk("first", 1.0, 4.0), Some(1.0));
        assert_eq!(mk("min", 3.0, 4.0), Some(3.0));
        assert_eq!(mk("max", 3.0, 4.0), Some(4.0));
        assert_eq!(mk("average", 1.0, 4.0), Some(2.5));
        assert_eq!(mk("omit", 1.0, 4.0), None);
        assert_eq!(mk("nonsense", 1.0, 4.0), None);
    }

    #[test]
    fn label_order_does_not_split_groups() {
        let a = val(1.0, vec![("a", Value::from("x")), ("b", Value::from("y"))]);
        let b = val(2.0, vec![("b", Value::from("y")), ("a", Value::from("x"))]);
        let mut all = parsed(&reply(1, vec![counter("m", None, vec![a])]));
        all.extend(parsed(&reply(1, vec![counter("m", None, vec![b])])));
        let agg = aggregate(all);
        assert_eq!(agg[0].values.len(), 1);
        assert_eq!(agg[0].values[0].value, 3.0);
    }

    #[test]
    fn histograms_keep_their_series_and_render() {
        let h = |le: Value, n: f64| {
            obj(vec![
                ("value", Value::number(n)),
                ("labels", obj(vec![("le", le)])),
                ("metricName", Value::from("lat_seconds_bucket")),
            ])
        };
        let metric = obj(vec![
            ("name", Value::from("lat_seconds")),
            ("help", Value::from("Latency.")),
            ("type", Value::from("histogram")),
            ("aggregator", Value::from("sum")),
            (
                "values",
                Value::Array(vec![
                    h(Value::number(0.5), 1.0),
                    h(Value::from("+Inf"), 2.0),
                    obj(vec![
                        ("value", Value::number(0.75)),
                        ("labels", obj(vec![])),
                        ("metricName", Value::from("lat_seconds_sum")),
                    ]),
                    obj(vec![
                        ("value", Value::number(2.0)),
                        ("labels", obj(vec![])),
                        ("metricName", Value::from("lat_seconds_count")),
                    ]),
                ]),
            ),
        ]);
        let mut all = parsed(&reply(1, vec![metric.clone()]));
        all.extend(parsed(&reply(1, vec![metric])));
        let agg = aggregate(all);
        let mut w = Writer::new();
        write(&mut w, &[("api".into(), agg)]);
        assert_eq!(
            w.finish(),
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{le=\"0.5\",app=\"api\"} 2\nlat_seconds_bucket{le=\"+Inf\",app=\"api\"} 4\n\
             lat_seconds_sum{app=\"api\"} 1.5\nlat_seconds_count{app=\"api\"} 4\n"
        );
    }

    #[test]
    fn apps_share_a_family_and_conflicts_are_skipped() {
        let a = aggregate(parsed(&reply(1, vec![counter("hits_total", None, vec![val(1.0, vec![])])])));
        let b = aggregate(parsed(&reply(1, vec![counter("hits_total", None, vec![val(2.0, vec![])])])));
        let mut gauge = a.clone();
        gauge[0].kind = "gauge".into();
        let mut own_app_label = b.clone();
        own_app_label[0].values[0].labels.push(("app".into(), "mine".into()));
        let mut w = Writer::new();
        assert!(w.family("corral_taken", "daemon's", Kind::Gauge));
        let mut taken = a.clone();
        taken[0].name = "corral_taken".into();
        write(
            &mut w,
            &[("a".into(), a), ("b".into(), own_app_label), ("c".into(), gauge), ("d".into(), taken)],
        );
        assert_eq!(
            w.finish(),
            "# HELP corral_taken daemon's\n# TYPE corral_taken gauge\n\
             # HELP hits_total Hits.\n# TYPE hits_total counter\n\
             hits_total{app=\"a\"} 1\nhits_total{app=\"mine\"} 2\n"
        );
    }

    #[test]
    fn garbage_is_skipped_not_fatal() {
        let v = obj(vec![
            ("type", Value::from(REPLY_TYPE)),
            ("requestId", Value::from(1)),
            (
                "metrics",
                Value::Array(vec![
                    Value::from(3),
                    Value::Array(vec![
                        Value::Null,
                        obj(vec![("name", Value::from(1))]),
                        obj(vec![
                            ("name", Value::from("bad name")),
                            ("values", Value::Array(vec![val(1.0, vec![])])),
                        ]),
                        obj(vec![
                            ("name", Value::from("ok")),
                            (
                                "values",
                                Value::Array(vec![Value::Null, obj(vec![("value", Value::from("x"))])]),
                            ),
                        ]),
                    ]),
                ]),
            ),
        ]);
        let ms = parsed(&v);
        assert_eq!(ms.len(), 2);
        let mut w = Writer::new();
        write(&mut w, &[("a".into(), aggregate(ms))]);
        assert_eq!(w.finish(), "# HELP ok \n# TYPE ok untyped\n");
    }

    #[test]
    fn holey_arrays_are_read() {
        let sparse = Value::SparseArray {
            length: 2,
            props: vec![
                ("1".into(), val(2.0, vec![])),
                ("0".into(), val(1.0, vec![("k", Value::from("a"))])),
            ],
        };
        let ms = parsed(&reply(1, vec![counter("m", None, vec![])]).clone());
        assert_eq!(ms[0].values.len(), 0);
        let m = obj(vec![("name", Value::from("m")), ("values", sparse)]);
        let ms = parsed(&reply(1, vec![m]));
        assert_eq!(ms[0].values.iter().map(|s| s.value).collect::<Vec<_>>(), vec![1.0, 2.0]);
    }

    #[test]
    fn js_numbers() {
        assert_eq!(js_number(0.005), "0.005");
        assert_eq!(js_number(10.0), "10");
        assert_eq!(js_number(f64::INFINITY), "Infinity");
        assert_eq!(js_number(-3.0), "-3");
    }
}
