//! The bodies of the fuzz targets: each takes the fuzzer's bytes, feeds them
//! to one parser that faces the network, and checks what must hold whatever
//! the input (no panic, no unbounded allocation, re-encoding is stable).
//! `fuzz_targets/*.rs` hand them to libFuzzer; `tests/replay.rs` runs them
//! over the seeds below and the corpus in `corpus/` without it.
//!
//! Inputs are plain bytes laid out so that a seed can be read and written
//! by hand:
//!
//! - `v1_claim`: `METHOD\nQUERY\nFORM` (query and form body form-encoded);
//! - `v3_claim`: `METHOD PATH?QUERY\nName: value\n...\n\nBODY`;
//! - `params`: one form-encoded parameter string;
//! - `node_frame`, `meta_frame`: the bytes a peer sends on a node or
//!   metadata connection (`u32 length | u8 version | u64 id | bincode`).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use cpfs_api::params::{form_decode, Params};
use cpfs_api::signature::{self, RawRequest};
use cpfs_proto::capability::CapabilityKey;
use cpfs_proto::frame::{encode_frame_within, read_frame_within, WireError, MAX_FRAME};
use cpfs_proto::meta::MetaRequest;
use cpfs_proto::node::NodeRequest;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{de::DeserializeOwned, Serialize};

/// The secret every fuzzed claim is verified with (the seeds are signed
/// with it, so the fuzzer starts from requests that pass).
pub const SECRET: &str = "fuzz-secret/+=";
/// The access key the seeds carry.
pub const ACCESS_KEY_ID: &str = "LTAI5tCpfsFuzz0001";
/// The metadata service's request limit (`cpfs_meta::server::MAX_META_REQUEST`,
/// 1 MiB; not imported so that the fuzz crate does not build the metadata
/// service).
pub const META_MAX_REQUEST: usize = 1 << 20;

fn split_once(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Checks a claim the way the gateway does after reading it: `None` when
/// the request makes no claim, else whether its signature verifies.
fn exercise_claim(req: &RawRequest<'_>) -> Option<bool> {
    let claim = signature::claim(req).ok()?;
    {
        assert!(!claim.access_key_id.is_empty() || claim.version == signature::Version::V3);
        let verified = claim.verify(SECRET).is_ok();
        let _ = claim.check_time(now());
        // The string to sign is built from the request alone: reading the
        // same request twice gives the same string.
        let again = signature::claim(req).expect("a claim read once reads again");
        assert_eq!(again.string_to_sign(), claim.string_to_sign());
        Some(verified)
    }
}

pub fn v1_claim(data: &[u8]) -> Option<bool> {
    let (method, rest) = split_once(data, b'\n');
    let (query, form) = split_once(rest, b'\n');
    let method = text(method);
    let query = form_decode(&text(query));
    let form = form_decode(&text(form));
    let headers = HeaderMap::new();
    let req = RawRequest {
        method: &method,
        path: "/",
        headers: &headers,
        body: &[],
        query: &query,
        form: &form,
    };
    if let Some((_, ts)) = query.iter().find(|(k, _)| k == "Timestamp") {
        let _ = signature::parse_timestamp(ts);
    }
    exercise_claim(&req)
}

/// `METHOD PATH?QUERY\nheaders\n\nbody` into the parts of a request;
/// header lines that are not a valid name and value are skipped.
pub fn v3_claim(data: &[u8]) -> Option<bool> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let (line, header_lines) = split_once(head, b'\n');
    let line = text(line);
    let (method, target) = line.split_once(' ').unwrap_or((line.as_str(), "/"));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = form_decode(query);
    let mut headers = HeaderMap::new();
    for l in header_lines.split(|b| *b == b'\n') {
        let (name, value) = split_once(l, b':');
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let _ = signature::v3::parse_authorization(auth);
    }
    let req = RawRequest {
        method,
        path,
        headers: &headers,
        body,
        query: &query,
        form: &[],
    };
    exercise_claim(&req)
}

/// `None` when the parameters are refused, else whether the action's
/// parser accepted them.
pub fn params(data: &[u8]) -> Option<bool> {
    let pairs = form_decode(&text(data));
    let p = Params::from_pairs(pairs).ok()?;
    let names: Vec<String> = p.iter().map(|(k, _)| k.clone()).collect();
    for name in &names {
        let _ = p.int(name, -1000, 1000);
        let _ = p.bool(name);
        let _ = p.string(name, 16);
        let _ = p.choice(name, &["a", "b"]);
        let list = name.split('.').next().unwrap_or(name);
        if let Ok(items) = p.list(list, 10) {
            assert!(items.len() <= 10);
        }
        if let Ok(items) = p.key_values(list, 20) {
            assert!(items.len() <= 20);
        }
    }
    if let Ok((number, size)) = p.page(10, 100) {
        assert!(number >= 1 && (1..=100).contains(&size));
    }
    // What the gateway does next: the action's own parser.
    let action = p.get("Action").unwrap_or("DescribeFileSystems").to_string();
    let version = p.get("Version").unwrap_or("2017-06-26").to_string();
    Some(cpfs_api::actions::parse_versioned(&version, &action, &p).is_ok())
}

/// Runs a future that never waits (reading from a slice) to completion.
fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("reading a frame from memory waited"),
    }
}

/// Decodes frames from `data` as a listener does, until one is refused;
/// every accepted message must re-encode within the limit and decode to
/// the same bytes again.
/// Returns how many frames were accepted.
fn frames<T: Serialize + DeserializeOwned>(data: &[u8], limit: usize, check: impl Fn(&T)) -> usize {
    let mut rd = data;
    let mut accepted = 0;
    loop {
        let before = rd.len();
        let r: Result<(u64, T), WireError> = now_or_never(read_frame_within(&mut rd, limit));
        let Ok((id, msg)) = r else {
            return accepted;
        };
        accepted += 1;
        assert!(
            rd.len() < before,
            "a frame was accepted without consuming input"
        );
        check(&msg);
        let frame = encode_frame_within(id, &msg, limit)
            .expect("a decoded frame re-encodes within its limit");
        let mut back = &frame[..];
        let (id2, msg2): (u64, T) =
            now_or_never(read_frame_within(&mut back, limit)).expect("a re-encoded frame decodes");
        assert_eq!(id, id2);
        assert!(back.is_empty());
        let frame2 = encode_frame_within(id2, &msg2, limit).expect("re-encodes");
        assert_eq!(frame, frame2, "decoding and encoding is stable");
    }
}

fn cluster_key() -> CapabilityKey {
    CapabilityKey::from_cluster_token("fuzz-cluster-token")
}

pub fn node_frame(data: &[u8]) -> usize {
    let key = cluster_key();
    let n = frames::<NodeRequest>(data, MAX_FRAME, |req| {
        // The first thing a node does with a request: the capability and,
        // for I/O, the range.
        match req {
            NodeRequest::Write {
                cap,
                key: k,
                offset,
                data,
                ..
            }
            | NodeRequest::Repair {
                cap,
                key: k,
                offset,
                data,
                ..
            } => {
                let _ = key.allows(cap, &k.fs, k.inode, 0xff, now());
                let _ = cpfs_proto::node::check_range(*offset, data.len() as u64);
            }
            NodeRequest::Read {
                cap,
                key: k,
                offset,
                len,
                ..
            } => {
                let _ = key.allows(cap, &k.fs, k.inode, 0xff, now());
                let _ = cpfs_proto::node::check_range(*offset, *len);
            }
            NodeRequest::WriteBatch { writes, .. } => {
                for w in writes {
                    let _ = key.allows(&w.cap, &w.key.fs, w.key.inode, 0xff, now());
                    let _ = cpfs_proto::node::check_range(w.offset, w.data.len() as u64);
                }
            }
            _ => {}
        }
    });
    // The body alone, as bincode sees it.
    let _ = bincode::deserialize::<NodeRequest>(data);
    n
}

pub fn meta_frame(data: &[u8]) -> usize {
    let n = frames::<MetaRequest>(data, META_MAX_REQUEST, |_| {});
    let _ = bincode::deserialize::<MetaRequest>(data);
    n
}

/// Seed inputs for each target, built with the project's own encoders so
/// that they follow the protocols as they are today: `(target, name,
/// bytes)`. Signed requests are signed with [`SECRET`] and verify.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use cpfs_api::signature::{v1, v3};
    use sha2::{Digest, Sha256};

    let mut out = Vec::new();
    let ts = "2026-01-01T00:00:00Z";

    // V1, GET in the query and POST in a form body.
    let mut pairs: Vec<(String, String)> = [
        ("Action", "DescribeFileSystems"),
        ("Version", "2017-06-26"),
        ("AccessKeyId", ACCESS_KEY_ID),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
        ("Timestamp", ts),
        ("Format", "JSON"),
        ("FileSystemId", "cpfs-0123456789abcdef"),
        ("Tag.1.Key", "a b*c~"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let encode = |pairs: &[(String, String)]| {
        pairs
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    cpfs_api::percent::encode(k),
                    cpfs_api::percent::encode(v)
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    };
    let sign_v1 = |method: &str, pairs: &[(String, String)]| {
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        v1::sign(SECRET, &v1::string_to_sign(method, &refs))
    };
    let mut get = pairs.clone();
    get.push(("Signature".into(), sign_v1("GET", &get)));
    out.push((
        "v1_claim",
        "get",
        format!("GET\n{}\n", encode(&get)).into_bytes(),
    ));
    pairs.retain(|(k, _)| k != "FileSystemId");
    let mut post = pairs.clone();
    post.push(("Signature".into(), sign_v1("POST", &post)));
    let (query, form) = post.split_at(3);
    out.push((
        "v1_claim",
        "post-form",
        format!("POST\n{}\n{}", encode(query), encode(form)).into_bytes(),
    ));

    // V3, with a form body.
    let body = b"FileSystemId=cpfs-0123456789abcdef&PageSize=10".to_vec();
    let hash = hex::encode(Sha256::digest(&body));
    let query = vec![("RegionId".to_string(), "cn-hangzhou".to_string())];
    let header_pairs = [
        (
            "content-type",
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("host", "127.0.0.1:8080".to_string()),
        ("x-acs-action", "DescribeFileSystems".to_string()),
        ("x-acs-content-sha256", hash.clone()),
        ("x-acs-date", ts.to_string()),
        ("x-acs-signature-nonce", "9a8b7c6d5e4f".to_string()),
        ("x-acs-version", "2017-06-26".to_string()),
    ];
    let mut headers = HeaderMap::new();
    for (k, v) in &header_pairs {
        headers.insert(
            HeaderName::from_static(k),
            HeaderValue::from_str(v).expect("seed header"),
        );
    }
    let signed: Vec<String> = header_pairs.iter().map(|(k, _)| k.to_string()).collect();
    let canonical =
        v3::canonical_request("POST", "/", &query, &headers, &signed, &hash).expect("seed request");
    let signature = v3::sign(SECRET, &v3::string_to_sign(&canonical));
    let mut req = String::from("POST /?RegionId=cn-hangzhou\n");
    for (k, v) in &header_pairs {
        req.push_str(&format!("{k}: {v}\n"));
    }
    req.push_str(&format!(
        "authorization: {} Credential={ACCESS_KEY_ID},SignedHeaders={},Signature={signature}\n\n",
        v3::ALGORITHM,
        signed.join(";")
    ));
    let mut req = req.into_bytes();
    req.extend_from_slice(&body);
    out.push(("v3_claim", "post-form", req));

    // Parameters of real actions.
    out.push((
        "params",
        "create-file-system",
        b"Action=CreateFileSystem&FileSystemType=cpfs&ProtocolType=cpfs&StorageType=advance_100&Capacity=5120&ZoneId=cn-hangzhou-b&VpcId=vpc-1&VSwitchId=vsw-1&Tag.1.Key=env&Tag.1.Value=prod&DryRun=true".to_vec(),
    ));
    out.push((
        "params",
        "tag-resources",
        b"Action=TagResources&ResourceType=filesystem&ResourceId.1=cpfs-0123456789abcdef&ResourceId.2=cpfs-fedcba9876543210&Tag.1.Key=k&Tag.1.Value=v".to_vec(),
    ));
    out.push((
        "params",
        "query-bill",
        b"Action=QueryBill&Version=2017-12-14&BillingCycle=2026-10&PageNum=1&PageSize=20".to_vec(),
    ));

    // Node and metadata frames, two per input (one connection carries many).
    let key = cluster_key();
    let cap = key.issue("cpfs-0123456789abcdef", 7, 0x3, now() + 3600);
    let chunk = cpfs_proto::node::ChunkKey {
        fs: "cpfs-0123456789abcdef".into(),
        inode: 7,
        index: 0,
        chain: 1,
    };
    let chain = cpfs_proto::node::ChainRef { id: 1, version: 3 };
    let write = NodeRequest::Write {
        cap: cap.clone(),
        chain,
        key: chunk.clone(),
        offset: 4096,
        data: vec![0xab; 64],
        forwarded: None,
    };
    let batch = NodeRequest::WriteBatch {
        chain,
        writes: vec![
            cpfs_proto::node::ChunkWrite {
                cap: cap.clone(),
                key: chunk.clone(),
                offset: 0,
                data: vec![0xcd; 64].into(),
            };
            2
        ],
        forwarded: None,
    };
    let read = NodeRequest::Read {
        cap,
        chain,
        key: chunk,
        offset: 0,
        len: 8192,
    };
    let read = encode_frame_within(2, &read, MAX_FRAME).expect("seed frame");
    let mut node = encode_frame_within(1, &write, MAX_FRAME).expect("seed frame");
    node.extend(&read);
    out.push(("node_frame", "write-read", node));
    let mut batched = encode_frame_within(1, &batch, MAX_FRAME).expect("seed frame");
    batched.extend(&read);
    out.push(("node_frame", "write-batch-read", batched));

    let caller = cpfs_proto::meta::Caller {
        uid: 0,
        gid: 0,
        groups: vec![0, 10],
    };
    let mount = MetaRequest {
        session: 0,
        caller: caller.clone(),
        op: cpfs_proto::meta::MetaOp::Mount {
            domain: "cpfs-0123456789abcdef-abc123.cn-hangzhou.cpfs.nas.localhost".into(),
        },
        id: None,
    };
    let mkdir = MetaRequest {
        session: 42,
        caller,
        op: cpfs_proto::meta::MetaOp::Mkdir {
            parent: 1,
            name: b"dir".to_vec(),
            mode: 0o755,
            umask: 0o022,
        },
        id: Some(cpfs_proto::meta::RequestId { client: 9, seq: 1 }),
    };
    let mut meta = encode_frame_within(1, &mount, META_MAX_REQUEST).expect("seed frame");
    meta.extend(encode_frame_within(2, &mkdir, META_MAX_REQUEST).expect("seed frame"));
    out.push(("meta_frame", "mount-mkdir", meta));
    out
}

/// The target body by name (for the replay test and the seed writer).
pub fn run(target: &str, data: &[u8]) {
    match target {
        "v1_claim" => drop(v1_claim(data)),
        "v3_claim" => drop(v3_claim(data)),
        "params" => drop(params(data)),
        "node_frame" => drop(node_frame(data)),
        "meta_frame" => drop(meta_frame(data)),
        other => panic!("no fuzz target {other}"),
    }
}

/// Every target, in the order bench/fuzz.sh runs them.
pub const TARGETS: &[&str] = &["v1_claim", "v3_claim", "params", "node_frame", "meta_frame"];
