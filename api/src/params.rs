//! Request parameters after form-decoding and merging query and body, with
//! typed, bounded accessors used by the per-action parse functions.

use std::collections::BTreeMap;

use crate::error::ApiError;

/// Bounds on what a request may carry (anything beyond is refused, never
/// processed).
pub const MAX_PARAMS: usize = 512;
pub const MAX_NAME_LEN: usize = 256;
pub const MAX_VALUE_LEN: usize = 16 * 1024;
/// Items of one `Name.N` list.
pub const MAX_LIST_ITEMS: usize = 100;

/// Decodes an `application/x-www-form-urlencoded` string (`+` is a space).
pub fn form_decode(s: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(s.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    map: BTreeMap<String, String>,
}

impl Params {
    /// Builds the parameter map, refusing repeats and oversize input.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Params, ApiError> {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if map.len() >= MAX_PARAMS {
                return Err(ApiError::invalid(
                    "ParameterCount",
                    format!("a request carries at most {MAX_PARAMS} parameters"),
                ));
            }
            if k.len() > MAX_NAME_LEN || v.len() > MAX_VALUE_LEN {
                return Err(ApiError::invalid(
                    "ParameterLength",
                    format!("parameter names are at most {MAX_NAME_LEN} bytes and values at most {MAX_VALUE_LEN}"),
                ));
            }
            if map.contains_key(&k) {
                return Err(ApiError::invalid(
                    "Duplicate",
                    format!("parameter {k} is given twice"),
                ));
            }
            map.insert(k, v);
        }
        Ok(Params { map })
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.map.iter()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// A present, non-empty value.
    pub fn opt(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.opt(name)
            .ok_or_else(|| ApiError::MissingParameter(name.to_string()))
    }

    /// An optional string of at most `max` characters.
    pub fn string(&self, name: &str, max: usize) -> Result<Option<String>, ApiError> {
        match self.opt(name) {
            Some(v) if v.chars().count() > max => Err(ApiError::invalid(
                name,
                format!("{name} is at most {max} characters"),
            )),
            v => Ok(v.map(str::to_string)),
        }
    }

    pub fn required_string(&self, name: &str, max: usize) -> Result<String, ApiError> {
        self.string(name, max)?
            .ok_or_else(|| ApiError::MissingParameter(name.to_string()))
    }

    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.opt(name) else {
            return Ok(None);
        };
        match v.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            Ok(_) => Err(ApiError::invalid(
                name,
                format!("{name} must be between {min} and {max}"),
            )),
            Err(_) => Err(ApiError::invalid(
                name,
                format!("{name} must be an integer, got \"{v}\""),
            )),
        }
    }

    pub fn required_int(&self, name: &str, min: i64, max: i64) -> Result<i64, ApiError> {
        self.int(name, min, max)?
            .ok_or_else(|| ApiError::MissingParameter(name.to_string()))
    }

    /// `true`/`false` in any case (the Python SDKs send `True`/`False`).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::invalid(
                name,
                format!("{name} must be true or false, got \"{v}\""),
            )),
        }
    }

    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        Ok(self.bool(name)?.unwrap_or(false))
    }

    /// One of the allowed values (exact match).
    pub fn choice(&self, name: &str, allowed: &[&str]) -> Result<Option<String>, ApiError> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) if allowed.contains(&v) => Ok(Some(v.to_string())),
            Some(v) => Err(ApiError::invalid(
                name,
                format!(
                    "{name} \"{v}\" is not valid; use one of {}",
                    allowed.join(", ")
                ),
            )),
        }
    }

    /// `Name.1`, `Name.2`, ... in index order (1-based, gaps refused).
    pub fn list(&self, name: &str, max_items: usize) -> Result<Vec<String>, ApiError> {
        let indexed = self.indexed(name, "")?;
        if indexed.len() > max_items {
            return Err(ApiError::invalid(
                name,
                format!("{name} holds at most {max_items} items"),
            ));
        }
        Ok(indexed.into_iter().map(|(_, v)| v).collect())
    }

    /// `Tag.N.Key` / `Tag.N.Value` pairs, in index order.
    pub fn key_values(
        &self,
        name: &str,
        max_items: usize,
    ) -> Result<Vec<(String, String)>, ApiError> {
        let keys = self.indexed(name, ".Key")?;
        if keys.len() > max_items {
            return Err(ApiError::invalid(
                name,
                format!("{name} holds at most {max_items} items"),
            ));
        }
        let values = self.indexed(name, ".Value")?;
        for (i, _) in &values {
            if !keys.iter().any(|(k, _)| k == i) {
                return Err(ApiError::MissingParameter(format!("{name}.{i}.Key")));
            }
        }
        Ok(keys
            .into_iter()
            .map(|(i, k)| {
                let v = values
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                (k, v)
            })
            .collect())
    }

    /// Values of `{name}.{N}{suffix}`, sorted by N.
    fn indexed(&self, name: &str, suffix: &str) -> Result<Vec<(usize, String)>, ApiError> {
        let prefix = format!("{name}.");
        let mut out = Vec::new();
        for (k, v) in self.map.range(prefix.clone()..) {
            let Some(rest) = k.strip_prefix(&prefix) else {
                break;
            };
            let Some(index) = rest.strip_suffix(suffix) else {
                continue;
            };
            if index.contains('.') {
                continue;
            }
            let n: usize = index
                .parse()
                .ok()
                .filter(|n| (1..=MAX_LIST_ITEMS).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        name,
                        format!("{k}: list indexes run from 1 to {MAX_LIST_ITEMS}"),
                    )
                })?;
            out.push((n, v.clone()));
        }
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }

    /// PageNumber (from 1) and PageSize (1..=max, default `default`).
    pub fn page(&self, default: i64, max: i64) -> Result<(i64, i64), ApiError> {
        let number = self.int("PageNumber", 1, 1_000_000)?.unwrap_or(1);
        let size = self.int("PageSize", 1, max)?.unwrap_or(default);
        Ok((number, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        Params::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn lists_are_ordered_by_index_not_text() {
        let params = p(&[
            ("ResourceId.10", "j"),
            ("ResourceId.2", "b"),
            ("ResourceId.1", "a"),
        ]);
        assert_eq!(params.list("ResourceId", 50).unwrap(), vec!["a", "b", "j"]);
        let params = p(&[
            ("Tag.2.Key", "k2"),
            ("Tag.1.Key", "k1"),
            ("Tag.1.Value", "v1"),
        ]);
        assert_eq!(
            params.key_values("Tag", 20).unwrap(),
            vec![("k1".into(), "v1".into()), ("k2".into(), String::new())]
        );
    }

    #[test]
    fn values_are_validated() {
        let params = p(&[("Capacity", "12x"), ("DryRun", "True"), ("Size", "0")]);
        assert_eq!(
            params.required_int("Capacity", 1, 10).unwrap_err().code(),
            "InvalidParameter.Capacity"
        );
        assert_eq!(params.bool("DryRun").unwrap(), Some(true));
        assert!(params.int("Size", 1, 5).is_err());
        assert_eq!(
            params.required("Missing").unwrap_err().code(),
            "MissingParameter"
        );
        assert!(params.list("X", 5).unwrap().is_empty());
        assert!(p(&[("Tag.0.Key", "a")]).key_values("Tag", 20).is_err());
        assert!(p(&[("Tag.1.Value", "a")]).key_values("Tag", 20).is_err());
    }

    #[test]
    fn refuses_duplicates_and_oversize() {
        let dup = Params::from_pairs(vec![("a".into(), "1".into()), ("a".into(), "2".into())]);
        assert!(dup.is_err());
        let big = Params::from_pairs(vec![("a".into(), "x".repeat(MAX_VALUE_LEN + 1))]);
        assert!(big.is_err());
        let many = Params::from_pairs((0..=MAX_PARAMS).map(|i| (format!("p{i}"), String::new())));
        assert!(many.is_err());
    }

    #[test]
    fn form_decoding_turns_plus_into_space() {
        assert_eq!(
            form_decode("a=1+2&b=%2B&c="),
            vec![
                ("a".to_string(), "1 2".to_string()),
                ("b".to_string(), "+".to_string()),
                ("c".to_string(), String::new())
            ]
        );
    }
}
