//! The OpenAPI descriptions (openapi/nas.json, openapi/bssopenapi.json) and
//! the router must agree: the same actions, and the same required
//! parameters for each.

use cpfs_api::actions::{self, NOT_YET_SUPPORTED, SUPPORTED};
use cpfs_api::params::Params;
use serde_json::Value;
use std::collections::BTreeSet;

fn spec() -> Value {
    serde_json::from_str(include_str!("../../openapi/nas.json")).expect("openapi/nas.json parses")
}

fn bss_spec() -> Value {
    serde_json::from_str(include_str!("../../openapi/bssopenapi.json"))
        .expect("openapi/bssopenapi.json parses")
}

fn documented(doc: &Value) -> BTreeSet<String> {
    doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| {
            k.strip_prefix("/?Action=")
                .expect("path key is /?Action=<name>")
                .to_string()
        })
        .collect()
}

#[test]
fn the_same_bss_actions() {
    let served: BTreeSet<String> = actions::bss::SUPPORTED
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        documented(&bss_spec()),
        served,
        "openapi/bssopenapi.json and actions::bss::SUPPORTED differ"
    );
}

#[test]
fn the_same_required_bss_parameters() {
    required_parameters_agree(&bss_spec(), actions::parse_bss);
}

/// Business parameters of an action: (wire name, required, example).
fn parameters(op: &Value) -> Vec<(String, bool, Option<String>)> {
    const COMMON: &[&str] = &[
        "Action",
        "Version",
        "Format",
        "RegionId",
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
    ];
    op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !COMMON.contains(&p["name"].as_str().unwrap()))
        .map(|p| {
            // `Name.N` lists are sent as `Name.1`, ...
            let name = p["name"].as_str().unwrap().replace(".N", ".1");
            (
                name,
                p["required"].as_bool().unwrap(),
                p["example"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn the_same_actions() {
    let doc = spec();
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| {
            k.strip_prefix("/?Action=")
                .expect("path key is /?Action=<name>")
                .to_string()
        })
        .collect();
    let served: BTreeSet<String> = SUPPORTED.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        documented, served,
        "openapi/nas.json and actions::SUPPORTED differ"
    );
    let unsupported: BTreeSet<String> = doc["x-unsupported-actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        unsupported,
        NOT_YET_SUPPORTED
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
}

#[test]
fn the_same_required_parameters() {
    required_parameters_agree(&spec(), actions::parse);
}

fn required_parameters_agree(
    doc: &Value,
    parse: fn(&str, &Params) -> Result<actions::Command, cpfs_api::error::ApiError>,
) {
    for (path, item) in doc["paths"].as_object().unwrap() {
        let action = path.strip_prefix("/?Action=").unwrap();
        assert_eq!(
            item["get"]["parameters"], item["post"]["parameters"],
            "{action}: GET and POST differ"
        );
        let params = parameters(&item["get"]);
        let required: Vec<(String, String)> = params
            .iter()
            .filter(|(_, req, _)| *req)
            .map(|(n, _, ex)| {
                (
                    n.clone(),
                    ex.clone()
                        .unwrap_or_else(|| panic!("{action}: required {n} has no example")),
                )
            })
            .collect();
        // With every required parameter, plus the optional ones given an
        // example (one-of choices such as UntagResources' TagKey.N / All),
        // the call parses.
        let mut minimal = required.clone();
        minimal.extend(
            params
                .iter()
                .filter(|(_, req, ex)| !req && ex.is_some())
                .map(|(n, _, ex)| (n.clone(), ex.clone().unwrap_or_default())),
        );
        let full = Params::from_pairs(minimal.clone()).unwrap();
        if let Err(e) = parse(action, &full) {
            panic!(
                "{action}: documented required parameters do not suffice: {} {e}",
                e.code()
            );
        }
        // Without any one of them, it is refused as missing.
        for (missing, _) in &required {
            let partial =
                Params::from_pairs(minimal.iter().filter(|(n, _)| n != missing).cloned()).unwrap();
            match parse(action, &partial) {
                Ok(_) => panic!("{action}: {missing} is documented as required but the router does not require it"),
                Err(e) => {
                    assert!(
                        e.code() == "MissingParameter" || e.code().starts_with("InvalidParameter."),
                        "{action} without {missing}: {}",
                        e.code()
                    );
                    let stem = missing.trim_end_matches(".1").split('.').next().unwrap();
                    assert!(e.to_string().contains(stem), "{action} without {missing}: {e}");
                }
            }
        }
    }
}
