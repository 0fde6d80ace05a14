//! Keyed search tokens (`docs/format/index-token.md`): what a resource's search values
//! become in the index, and the tokens a query value looks up. Pure functions of the
//! search key, the generation and the values.

use medvault_crypto::{IndexKey, Secret32};
use medvault_fhir::search::{Decimal, IndexEntry, IndexValue, Prefix, QueryValue};

use crate::engine::SearchToken;

/// The scheme's domain string; part of every token and of the definitions digest.
pub const SCHEME: &str = "medvault/search-token/v1";
/// Prefixes of a normalized string that are indexed, in Unicode scalar values.
pub const STRING_PREFIX_CHARS: usize = 8;
/// Canonical buckets a range may have before it is indexed as `wide`.
pub const COVER_BUCKETS: usize = 16;

pub const KIND_TYPE: u8 = 0x01;
pub const KIND_COMPARTMENT: u8 = 0x02;
pub const KIND_SHARED: u8 = 0x03;
pub const KIND_PRESENT: u8 = 0x04;
pub const KIND_TOKEN_CODE: u8 = 0x10;
pub const KIND_TOKEN_SYSTEM_CODE: u8 = 0x11;
pub const KIND_TOKEN_TEXT: u8 = 0x14;
pub const KIND_STRING_PREFIX: u8 = 0x20;
pub const KIND_STRING_EXACT: u8 = 0x21;
pub const KIND_REFERENCE: u8 = 0x30;
pub const KIND_REFERENCE_ID: u8 = 0x31;
pub const KIND_REFERENCE_URL: u8 = 0x32;
pub const KIND_URI: u8 = 0x40;
/// Ordered families: `+0` cover, `+1` in, `+2` wide.
pub const KIND_DATE: u8 = 0x50;
pub const KIND_NUMBER: u8 = 0x60;
pub const KIND_QUANTITY: u8 = 0x70;
const COVER: u8 = 0;
const IN: u8 = 1;
const WIDE: u8 = 2;

/// The search key of one index generation.
pub struct SearchKey {
    mac: IndexKey,
    generation: u32,
    /// The `keys` row of the key.
    pub key_id: u64,
    /// Benchmark builds only (`bench-plaintext-index`): tokens are their plaintext input.
    danger_plaintext: bool,
}

impl std::fmt::Debug for SearchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchKey").field("generation", &self.generation).field("key_id", &self.key_id).finish()
    }
}

impl SearchKey {
    pub fn new(key: &Secret32, generation: u32, key_id: u64) -> Self {
        Self { mac: IndexKey::new(key), generation, key_id, danger_plaintext: false }
    }

    /// A key whose tokens are their plaintext input, so a benchmark can measure what keyed
    /// tokens cost. Such an index holds names, codes and dates in the clear.
    #[cfg(feature = "bench-plaintext-index")]
    pub fn danger_plaintext_for_benchmark(key: &Secret32, generation: u32, key_id: u64) -> Self {
        Self { mac: IndexKey::new(key), generation, key_id, danger_plaintext: true }
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The key that seals paging cursors.
    pub fn cursor_key(&self) -> Secret32 {
        Secret32::from_bytes(self.mac.mac(&[b"medvault/search-cursor/v1"]))
    }

    /// `HMAC(key, SCHEME ‖ gen ‖ kind ‖ lp(type) ‖ lp(param) ‖ lp(field)…)`, first 16 bytes.
    pub fn token(&self, kind: u8, resource_type: &str, param: &str, fields: &[&[u8]]) -> SearchToken {
        let mut input = Vec::with_capacity(64 + fields.iter().map(|f| f.len() + 4).sum::<usize>());
        input.extend_from_slice(SCHEME.as_bytes());
        input.extend_from_slice(&self.generation.to_be_bytes());
        input.push(kind);
        for part in [resource_type.as_bytes(), param.as_bytes()].iter().chain(fields) {
            let length = u32::try_from(part.len()).unwrap_or(u32::MAX);
            input.extend_from_slice(&length.to_be_bytes());
            input.extend_from_slice(part);
        }
        if self.danger_plaintext {
            // Only reachable with `bench-plaintext-index`: the kind, type, parameter and
            // fields in the clear, without the constant scheme and generation prefix; a
            // token longer than a document entry can hold is hashed instead.
            let plain = &input[SCHEME.len() + 4..];
            return if plain.len() <= usize::from(u8::MAX) {
                plain.to_vec()
            } else {
                medvault_crypto::sha256(plain).to_vec()
            };
        }
        self.mac.mac(&[&input])[..16].to_vec()
    }

    pub fn type_token(&self, resource_type: &str) -> SearchToken {
        self.token(KIND_TYPE, resource_type, "", &[])
    }

    pub fn compartment_token(&self, compartment: &[u8; 32]) -> SearchToken {
        self.token(KIND_COMPARTMENT, "", "", &[compartment])
    }

    pub fn shared_token(&self) -> SearchToken {
        self.token(KIND_SHARED, "", "", &[])
    }

    pub fn present_token(&self, resource_type: &str, param: &str) -> SearchToken {
        self.token(KIND_PRESENT, resource_type, param, &[])
    }

    /// Every token of a resource: its type, its compartment (or shared), and for each
    /// value of each parameter its tokens and the parameter's presence. Sorted, unique.
    pub fn document(
        &self,
        resource_type: &str,
        compartment: Option<&[u8; 32]>,
        entries: &[IndexEntry],
    ) -> Vec<SearchToken> {
        let mut tokens = vec![self.type_token(resource_type)];
        tokens.push(match compartment {
            Some(compartment) => self.compartment_token(compartment),
            None => self.shared_token(),
        });
        for entry in entries {
            tokens.push(self.present_token(resource_type, &entry.param));
            self.value_tokens(resource_type, &entry.param, &entry.value, &mut tokens);
        }
        tokens.sort_unstable();
        tokens.dedup();
        tokens
    }

    fn value_tokens(&self, resource_type: &str, param: &str, value: &IndexValue, out: &mut Vec<SearchToken>) {
        let token = |kind, fields: &[&[u8]]| self.token(kind, resource_type, param, fields);
        match value {
            // `system|` and `|code` queries are rare: they take the code's or the parameter's
            // tokens as candidates and are decided on the decrypted resource.
            IndexValue::Token { system, code } => {
                out.push(token(KIND_TOKEN_CODE, &[code.as_bytes()]));
                if let Some(system) = system {
                    out.push(token(KIND_TOKEN_SYSTEM_CODE, &[system.as_bytes(), code.as_bytes()]));
                }
            }
            // `:text` matches a prefix of the whole normalized text, as strings do.
            IndexValue::TokenText(text) => {
                for prefix in prefixes(text) {
                    out.push(token(KIND_TOKEN_TEXT, &[prefix.as_bytes()]));
                }
            }
            IndexValue::String(text) => {
                for prefix in prefixes(text) {
                    out.push(token(KIND_STRING_PREFIX, &[prefix.as_bytes()]));
                }
            }
            IndexValue::StringExact(text) => out.push(token(KIND_STRING_EXACT, &[text.as_bytes()])),
            IndexValue::Reference { resource_type: target, id, url } => {
                if let (Some(target), Some(id)) = (target, id) {
                    out.push(token(KIND_REFERENCE, &[target.as_bytes(), id.as_bytes()]));
                }
                match id {
                    Some(id) => out.push(token(KIND_REFERENCE_ID, &[id.as_bytes()])),
                    // Only a reference without an id (absolute, a canonical) is found by URL.
                    None => {
                        out.push(token(KIND_REFERENCE_URL, &[url.as_bytes()]));
                        // A canonical with `|version` also matches the canonical without it.
                        if let Some((canonical, _)) = url.split_once('|') {
                            out.push(token(KIND_REFERENCE_URL, &[canonical.as_bytes()]));
                        }
                    }
                }
            }
            IndexValue::Uri(uri) => out.push(token(KIND_URI, &[uri.as_bytes()])),
            IndexValue::Date { low, high } => {
                let range = date_range(*low, *high);
                self.ordered_tokens(resource_type, param, KIND_DATE, &[], &DATE_LEVELS, range, out);
            }
            IndexValue::Number { value, low, high } => {
                let range = number_range(*value, *low, *high);
                self.ordered_tokens(resource_type, param, KIND_NUMBER, &[], &NUMBER_LEVELS, range, out);
            }
            // The unit is decided on the decrypted resource.
            IndexValue::Quantity { value, low, high, .. } => {
                let range = number_range(*value, *low, *high);
                self.ordered_tokens(resource_type, param, KIND_QUANTITY, &[], &NUMBER_LEVELS, range, out);
            }
        }
    }

    /// Cover and in tokens of a key range, or its wide token.
    #[allow(clippy::too_many_arguments)]
    fn ordered_tokens(
        &self,
        resource_type: &str,
        param: &str,
        family: u8,
        unit: &[&[u8]],
        levels: &Levels,
        range: Option<(u64, u64)>,
        out: &mut Vec<SearchToken>,
    ) {
        let bucket_token = |kind: u8, level: usize, bucket: u64| {
            let level_byte = [levels.prefixes[level]];
            let bucket_bytes = bucket.to_be_bytes();
            let mut fields: Vec<&[u8]> = unit.to_vec();
            fields.push(&level_byte);
            fields.push(&bucket_bytes);
            self.token(family + kind, resource_type, param, &fields)
        };
        // A range reaching outside the levels' domain is wide: clamping it would lose the
        // part outside, which a query may ask for.
        let inside = range.filter(|(low, high)| *low >= levels.domain.0 && *high <= levels.domain.1);
        let canonical = inside.and_then(|(low, high)| levels.canonical(low, high, COVER_BUCKETS));
        let Some(canonical) = canonical else {
            out.push(self.token(family + WIDE, resource_type, param, unit));
            return;
        };
        let finest = levels.prefixes.len() - 1;
        for &(level, bucket) in &canonical {
            // A query finds a finest bucket through its own `in` token: no coarser query
            // bucket lies inside it, so its `cover` token would never be asked for.
            if level != finest {
                out.push(bucket_token(COVER, level, bucket));
            }
            out.push(bucket_token(IN, level, bucket));
            for (ancestor_level, ancestor) in levels.ancestors(level, bucket) {
                out.push(bucket_token(IN, ancestor_level, ancestor));
            }
        }
    }

    /// The tokens a resource overlapping `range` has at least one of (`docs/format/index-token.md`).
    pub fn region_tokens(
        &self,
        resource_type: &str,
        param: &str,
        family: u8,
        unit: Option<&str>,
        levels: &Levels,
        range: (u64, u64),
    ) -> Vec<SearchToken> {
        let unit_fields: Vec<&[u8]> = unit.map(str::as_bytes).into_iter().collect();
        let bucket_token = |kind: u8, level: usize, bucket: u64| {
            let level_byte = [levels.prefixes[level]];
            let bucket_bytes = bucket.to_be_bytes();
            let mut fields = unit_fields.clone();
            fields.push(&level_byte);
            fields.push(&bucket_bytes);
            self.token(family + kind, resource_type, param, &fields)
        };
        let mut tokens = vec![self.token(family + WIDE, resource_type, param, &unit_fields)];
        let canonical = levels.canonical(range.0, range.1, usize::MAX).unwrap_or_default();
        let mut ancestors = std::collections::BTreeSet::new();
        for &(level, bucket) in &canonical {
            tokens.push(bucket_token(IN, level, bucket));
            ancestors.extend(levels.ancestors(level, bucket));
        }
        for (level, bucket) in ancestors {
            tokens.push(bucket_token(COVER, level, bucket));
        }
        tokens.sort_unstable();
        tokens.dedup();
        tokens
    }
}

/// The prefixes of a normalized string that are indexed (1 to `STRING_PREFIX_CHARS`).
pub fn prefixes(text: &str) -> impl Iterator<Item = &str> {
    text.char_indices()
        .skip(1)
        .map(|(at, _)| at)
        .chain(std::iter::once(text.len()))
        .take(STRING_PREFIX_CHARS)
        .filter(move |_| !text.is_empty())
        .map(move |end| &text[..end])
}

/// The prefix a query string looks up, and whether that token decides the match alone.
pub fn query_prefix(text: &str) -> (&str, bool) {
    match text.char_indices().nth(STRING_PREFIX_CHARS) {
        Some((at, _)) => (&text[..at], false),
        None => (text, true),
    }
}

/// Bucket levels over 64-bit ordered keys: prefix lengths, coarse to fine, and the domain.
#[derive(Debug)]
pub struct Levels {
    pub prefixes: &'static [u8],
    pub domain: (u64, u64),
}

/// Dates: buckets of 2³⁸ ms (≈ 8.7 years), 2³⁴ (≈ 199 days), 2³⁰ (≈ 12.4 days) and 2²⁶
/// (≈ 18.6 hours), over 1800 to 2299: a date outside it (rare) is `wide`, so a query
/// range is at most some 60 coarse buckets.
pub const DATE_LEVELS: Levels =
    Levels { prefixes: &[26, 30, 34, 38], domain: (date_key(DATE_DOMAIN_MS.0), date_key(DATE_DOMAIN_MS.1)) };
/// Numbers and quantities: the finest bucket is 1/4096 of a binary order of magnitude.
pub const NUMBER_LEVELS: Levels = Levels { prefixes: &[8, 12, 16, 20, 24], domain: (0, u64::MAX) };
/// 1800-01-01T00:00:00.000Z and 2299-12-31T23:59:59.999Z.
pub const DATE_DOMAIN_MS: (i64, i64) = (-5_364_662_400_000, 10_413_791_999_999);

impl Levels {
    fn shift(&self, level: usize) -> u32 {
        64 - u32::from(self.prefixes[level])
    }

    /// The fewest buckets whose union covers `[low, high]` (clamped to the domain, edges
    /// rounded outwards to the finest level), or `None` if more than `max` are needed.
    pub fn canonical(&self, low: u64, high: u64, max: usize) -> Option<Vec<(usize, u64)>> {
        let low = low.max(self.domain.0);
        let high = high.min(self.domain.1);
        if low > high {
            return Some(Vec::new());
        }
        let finest = self.prefixes.len() - 1;
        let (low_f, high_f) = (low >> self.shift(finest), high >> self.shift(finest));
        let mut out = Vec::new();
        for bucket in (low >> self.shift(0))..=(high >> self.shift(0)) {
            self.visit(0, bucket, (low_f, high_f), max, &mut out)?;
        }
        Some(out)
    }

    fn visit(
        &self,
        level: usize,
        bucket: u64,
        bounds: (u64, u64),
        max: usize,
        out: &mut Vec<(usize, u64)>,
    ) -> Option<()> {
        let finest = self.prefixes.len() - 1;
        let width_bits = self.shift(level) - self.shift(finest);
        let first = bucket << width_bits;
        let last = first | ((1u64 << width_bits) - 1);
        if (first >= bounds.0 && last <= bounds.1) || level == finest {
            if out.len() >= max {
                return None;
            }
            out.push((level, bucket));
            return Some(());
        }
        let child_bits = self.shift(level) - self.shift(level + 1);
        let children = (bucket << child_bits)..=((bucket << child_bits) | ((1u64 << child_bits) - 1));
        let child_width = self.shift(level + 1) - self.shift(finest);
        for child in children {
            let child_first = child << child_width;
            let child_last = child_first | ((1u64 << child_width) - 1);
            if child_last >= bounds.0 && child_first <= bounds.1 {
                self.visit(level + 1, child, bounds, max, out)?;
            }
        }
        Some(())
    }

    /// The buckets of coarser levels that contain `(level, bucket)`.
    pub fn ancestors(&self, level: usize, bucket: u64) -> impl Iterator<Item = (usize, u64)> + '_ {
        (0..level).map(move |coarser| (coarser, bucket >> (self.shift(coarser) - self.shift(level))))
    }
}

/// Milliseconds to an ordered key (the sign bit flipped).
pub const fn date_key(ms: i64) -> u64 {
    (ms as u64) ^ (1 << 63)
}

/// A decimal to an ordered key through its nearest `f64` (correctly rounded, so monotonic).
pub fn number_key(value: Decimal) -> Option<u64> {
    let float = value.to_f64();
    if float.is_nan() {
        return None;
    }
    let bits = float.to_bits();
    Some(if bits >> 63 == 1 { !bits } else { bits | (1 << 63) })
}

fn date_range(low: i64, high: i64) -> Option<(u64, u64)> {
    (low <= high).then(|| (date_key(low), date_key(high)))
}

/// The key range of a number or quantity: its bounds, open where a bound is absent (a
/// `Range` without one, a comparator); a value without bounds is a point.
fn number_range(value: Option<Decimal>, low: Option<Decimal>, high: Option<Decimal>) -> Option<(u64, u64)> {
    let (low, high) = if low.is_none() && high.is_none() { (value, value) } else { (low, high) };
    let low_key = match low {
        Some(low) => number_key(low)?,
        None => 0,
    };
    let high_key = match high {
        Some(high) => number_key(high)?,
        None => u64::MAX,
    };
    (low_key <= high_key).then_some((low_key, high_key))
}

/// The key ranges a resource's value must overlap to match a date, number or quantity
/// query value with its prefix: a superset of the rules of `medvault_fhir::search`
/// (candidates are post-filtered). `low`..`high` is the search value's range; `pivot` the
/// point the strict comparisons use (its high end for dates, its exact value for numbers)
/// and `pivot_low` the one `lt`/`eb` use (its low end for dates, its value for numbers).
pub fn query_regions(
    prefix: Prefix,
    (low, high): (u64, u64),
    (pivot_low, pivot): (u64, u64),
    approximate: (u64, u64),
) -> Vec<(u64, u64)> {
    match prefix {
        Prefix::Eq => vec![(low, high)],
        Prefix::Ap => vec![approximate],
        // Not contained in the range: some part lies on either side of it.
        Prefix::Ne => vec![(0, low), (high, u64::MAX)],
        // Reaches above the pivot (or, for `ge`, lies within the range).
        Prefix::Gt | Prefix::Sa => vec![(pivot, u64::MAX)],
        Prefix::Ge => vec![(low.min(pivot), u64::MAX)],
        // Reaches below the pivot (or, for `le`, lies within the range).
        Prefix::Lt | Prefix::Eb => vec![(0, pivot_low)],
        Prefix::Le => vec![(0, high.max(pivot_low))],
    }
}

/// The prefix of a date, number or quantity query value.
pub fn prefix_of(value: &QueryValue) -> Option<Prefix> {
    match value {
        QueryValue::Date { prefix, .. } | QueryValue::Number { prefix, .. } | QueryValue::Quantity { prefix, .. } => {
            Some(*prefix)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SearchKey {
        SearchKey::new(&Secret32::from_bytes([7; 32]), 1, 1)
    }

    #[test]
    fn canonical_buckets_cover_the_range_and_nothing_far() {
        let levels = &NUMBER_LEVELS;
        for (low, high) in [(5u64 << 40, 9u64 << 40), (1 << 63, u64::MAX), (0, 17), (12345 << 39, 12345 << 39)] {
            let buckets = levels.canonical(low, high, usize::MAX).expect("unbounded");
            for probe in [low, high, low / 2 + high / 2] {
                assert!(
                    buckets.iter().any(|&(level, bucket)| probe >> levels.shift(level) == bucket),
                    "{probe} not covered"
                );
            }
            assert!(buckets.len() <= 2 * 15 * 5 + 256, "{}", buckets.len());
        }
        assert!(levels.canonical(1 << 40, 1 << 62, 16).is_none(), "a wide range needs many buckets");
        let day = DATE_LEVELS.canonical(date_key(1_600_000_000_000), date_key(1_600_000_000_999), 16).expect("one");
        assert_eq!(day.len(), 1);
        assert_eq!(day[0].0, DATE_LEVELS.prefixes.len() - 1, "a point is one finest bucket");
    }

    #[test]
    fn overlapping_ranges_share_a_token() {
        let key = key();
        let ms = |y: i64| (y - 1970) * 365 * 86_400_000;
        let values = [(ms(2020), ms(2020) + 1000), (ms(1999), ms(2031)), (ms(2021), ms(2021)), (ms(1900), ms(1950))];
        let queries = [(ms(2020) - 5, ms(2020) + 5), (ms(2025), ms(2100)), (ms(1940), ms(1941)), (ms(1000), ms(1800))];
        for (value_low, value_high) in values {
            let mut tokens = Vec::new();
            key.ordered_tokens(
                "Observation",
                "date",
                KIND_DATE,
                &[],
                &DATE_LEVELS,
                date_range(value_low, value_high),
                &mut tokens,
            );
            for (query_low, query_high) in queries {
                let region = key.region_tokens(
                    "Observation",
                    "date",
                    KIND_DATE,
                    None,
                    &DATE_LEVELS,
                    (date_key(query_low), date_key(query_high)),
                );
                let overlaps = value_low <= query_high && query_low <= value_high;
                let shares = tokens.iter().any(|t| region.contains(t));
                assert!(!overlaps || shares, "value {value_low}..{value_high} query {query_low}..{query_high}");
            }
        }
    }

    #[test]
    fn prefixes_are_counted_in_characters() {
        assert_eq!(prefixes("zoë").collect::<Vec<_>>(), ["z", "zo", "zoë"]);
        assert_eq!(prefixes("abcdefghij").count(), STRING_PREFIX_CHARS);
        assert_eq!(prefixes("").count(), 0);
        assert_eq!(query_prefix("abcdefgh"), ("abcdefgh", true));
        assert_eq!(query_prefix("abcdefghi"), ("abcdefgh", false));
    }

    #[test]
    fn number_keys_keep_order() {
        let values = ["-1e10", "-5.5", "-0.001", "0", "0.001", "1", "1.5", "100", "1e300"];
        let keys: Vec<u64> =
            values.iter().map(|v| number_key(Decimal::parse(v).expect("decimal")).expect("key")).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    }
}
