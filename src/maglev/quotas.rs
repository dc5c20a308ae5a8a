//! How many table entries each backend owns: its weight's share of M, rounded so the shares
//! sum to M and each is within one entry of exact.

/// Each backend's number of entries (`weights` in canonical order): floor(M * w / W), plus one for the backends with the
/// largest remainders (ties to the lower canonical index) until the quotas sum to M.
pub(super) fn quotas(weights: &[u32], size: u32) -> Vec<u32> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    let size = u64::from(size);
    // M and w are below 2^32, so M * w fits in a u64; the quotient is at most M.
    let mut quotas: Vec<u32> = weights
        .iter()
        .map(|&w| (size * u64::from(w) / total) as u32)
        .collect();
    let assigned: u64 = quotas.iter().map(|&q| u64::from(q)).sum();
    let left_over = (size - assigned) as usize;
    if left_over > 0 {
        let mut by_remainder: Vec<(u64, u32)> = weights
            .iter()
            .enumerate()
            .map(|(index, &w)| (size * u64::from(w) % total, index as u32))
            .filter(|&(remainder, _)| remainder > 0)
            .collect();
        // The remainders sum to left_over * total and each is below total, so at least
        // left_over backends have one. Only which backends rank first matters, not their
        // order: a selection (O(N)) finds them, cheaper than a sort (docs/maglev.md, "Making
        // the build fast").
        if left_over < by_remainder.len() {
            by_remainder
                .select_nth_unstable_by(left_over, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        for &(_, index) in by_remainder.iter().take(left_over) {
            if let Some(quota) = quotas.get_mut(index as usize) {
                *quota += 1;
            }
        }
    }
    quotas
}
