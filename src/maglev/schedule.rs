//! The order in which backends take their turns while the table fills: backend i takes its
//! k-th slot in round floor(k * Q / quota_i) (Q = the largest quota), and within a round the
//! backends go in index order. With equal weights this is the paper's round robin.
//!
//! [`turns`] hands the turns out a run at a time, as backend indices, to whatever fills the
//! table (`fill.rs`); the schedule knows nothing of slots.

/// Hands every turn of the schedule for `quotas` (which sum to `size`) to `take`, in order,
/// a run of backend indices at a time.
pub(super) fn turns(quotas: &[u32], size: u32, mut take: impl FnMut(&[u32])) {
    let active: Vec<u32> = (0..quotas.len() as u32)
        .filter(|&index| quotas[index as usize] > 0)
        .collect();
    let rounds = quotas.iter().copied().max().unwrap_or(0);
    // Equal weights, the common case: the first backends get one entry more than the rest,
    // and the calendar below reduces to the paper's plain round robin.
    // (Counted from the front, not binary-searched: with unequal weights the longest quotas
    // need not come first, and then this is not the equal-weights case at all.)
    let longer = active
        .iter()
        .take_while(|&&index| quotas[index as usize] == rounds)
        .count();
    let round_robin = active[longer..]
        .iter()
        .all(|&index| quotas[index as usize] + 1 == rounds);
    if round_robin {
        for round in 0..rounds {
            let due = if round + 1 < rounds {
                &active[..]
            } else {
                &active[..longer]
            };
            take(due);
        }
    } else {
        general(quotas, rounds, size, &mut take);
    }
}

/// The general schedule. Its turns are written out a chunk at a time, as backend indices, and
/// each chunk is filled in one loop, as equal weights are: a loop over each round's few turns
/// costs more in per-round work than the turns (docs/maglev.md, "Making the build fast").
/// The turns come from [`QuotaGroups`] when few distinct quotas occur, else from the
/// [`Calendar`] scan or, for very unequal weights, a counting sort.
pub(super) fn general(quotas: &[u32], rounds: u32, size: u32, take: &mut impl FnMut(&[u32])) {
    // Small enough to stay in L1 next to the bitmap, large enough that a chunk's overhead
    // does not show.
    const CHUNK: usize = 2048;
    if let Some(mut groups) = QuotaGroups::new(quotas, rounds) {
        // A round this long is filled straight from the cached list: copying it would cost
        // more than the call it saves.
        const LONG_ROUND: usize = 256;
        let mut turns: Vec<u32> = Vec::with_capacity(CHUNK + LONG_ROUND);
        while let Some(due) = groups.next_round() {
            if due.len() >= LONG_ROUND {
                take(&turns);
                turns.clear();
                take(due);
            } else {
                turns.extend_from_slice(due);
                if turns.len() >= CHUNK {
                    take(&turns);
                    turns.clear();
                }
            }
        }
        take(&turns);
        return;
    }
    let mut calendar = Calendar::new(quotas, rounds);
    if calendar.scan_length() > 4 * u64::from(size) {
        // Very unequal weights make the scan long (heavy backends set many rounds, each
        // scanned in full); sorting the turns costs O(M + Q) whatever the weights.
        take(&turn_order_by_counting(quotas, rounds));
        return;
    }
    let mut turns = vec![0u32; CHUNK + quotas.len() + 1];
    loop {
        let count = calendar.next_turns(&mut turns, CHUNK);
        if count == 0 {
            break;
        }
        take(&turns[..count]);
    }
}

/// The general schedule when few distinct quotas occur (weights from a short list, the usual
/// case): backends with equal quotas share a phase (see [`Calendar`]), so a round costs one
/// phase step per quota to find which groups are due, and the round's turns are a list cached
/// per set of due groups, built once by one scan over the backends. Weights 1,2,3,4 give at
/// most eight groups (a weight's quota and that plus one); for N = 1000 and M = 65537 there
/// are five, and their 105 rounds need five distinct lists, where the plain calendar scans
/// all backends 105 times.
pub(super) struct QuotaGroups {
    /// Per group, its quota and phase.
    quotas: Vec<u32>,
    phases: Vec<u32>,
    /// The backends with a quota above 0, with their group numbers.
    indices: Vec<u32>,
    groups: Vec<u8>,
    /// Per set of due groups (a bit per group), the round's turns once built.
    lists: Vec<Option<Vec<u32>>>,
    rounds: u32,
    round: u32,
}

impl QuotaGroups {
    /// At most 2^8 lists of at most N turns: beyond that a scan per round is as cheap.
    pub(super) const MAX_GROUPS: usize = 8;

    /// `None` when there are more than [`QuotaGroups::MAX_GROUPS`] distinct quotas above 0, or
    /// fewer than two backends per quota: then a round's scan is no longer than stepping the
    /// groups, and a round's few turns cost more to copy from a cached list than to scan (a
    /// heavy backend among two or three light ones sets tens of thousands of rounds).
    pub(super) fn new(quotas: &[u32], rounds: u32) -> Option<QuotaGroups> {
        let mut distinct: Vec<u32> = Vec::with_capacity(Self::MAX_GROUPS + 1);
        let mut indices = Vec::new();
        let mut groups = Vec::new();
        for (index, &quota) in quotas.iter().enumerate() {
            if quota == 0 {
                continue;
            }
            let group = match distinct.iter().position(|&known| known == quota) {
                Some(group) => group,
                None if distinct.len() < Self::MAX_GROUPS => {
                    distinct.push(quota);
                    distinct.len() - 1
                }
                None => return None,
            };
            indices.push(index as u32);
            groups.push(group as u8);
        }
        if 2 * distinct.len() > indices.len() {
            return None;
        }
        Some(QuotaGroups {
            phases: vec![rounds.saturating_sub(1); distinct.len()],
            lists: vec![None; 1 << distinct.len()],
            quotas: distinct,
            indices,
            groups,
            rounds,
            round: 0,
        })
    }

    /// The next round's turns, in index order; `None` once all rounds are out.
    pub(super) fn next_round(&mut self) -> Option<&[u32]> {
        if self.round >= self.rounds {
            return None;
        }
        self.round += 1;
        let mut due_groups = 0usize;
        for (group, (phase, &quota)) in self.phases.iter_mut().zip(&self.quotas).enumerate() {
            due_groups |= usize::from(step_phase(phase, quota, self.rounds)) << group;
        }
        let (indices, groups) = (&self.indices, &self.groups);
        let list = self.lists.get_mut(due_groups)?.get_or_insert_with(|| {
            let mut list = vec![0u32; indices.len()];
            let due = indices
                .iter()
                .zip(groups)
                .map(|(&index, &group)| (index, due_groups >> group & 1 != 0));
            let count = keep_due(&mut list, due);
            list.truncate(count);
            list
        });
        Some(list)
    }
}

/// Produces the general schedule's turns round by round: backend i's k-th turn falls in round
/// floor(k * Q / quota_i), and a round's turns go in index order.
///
/// Backend i is due in round r when some k has r <= k * Q / quota_i < r + 1, that is when
/// [r * quota_i, (r + 1) * quota_i) holds a multiple of Q. Its phase, (r * quota_i - 1) mod Q,
/// tells that with an add and a compare: the interval holds one when phase + quota_i >= Q.
pub(super) struct Calendar {
    /// The backends with a quota above 0, and their quotas and phases.
    indices: Vec<u32>,
    quotas: Vec<u32>,
    phases: Vec<u32>,
    rounds: u32,
    round: u32,
}

impl Calendar {
    pub(super) fn new(quotas: &[u32], rounds: u32) -> Calendar {
        let (indices, quotas): (Vec<u32>, Vec<u32>) = quotas
            .iter()
            .enumerate()
            .filter(|&(_, &quota)| quota > 0)
            .map(|(index, &quota)| (index as u32, quota))
            .unzip();
        Calendar {
            phases: vec![rounds.saturating_sub(1); indices.len()],
            indices,
            quotas,
            rounds,
            round: 0,
        }
    }

    /// How many (round, backend) pairs the scan visits.
    fn scan_length(&self) -> u64 {
        self.indices.len() as u64 * u64::from(self.rounds)
    }

    /// Writes the turns of the next rounds to `turns`, whole rounds until at least `at_least`
    /// (or the schedule ends), and returns how many. `turns` must have room for `at_least`
    /// plus one round and one more: every backend's index is written, and only a due one's
    /// is kept (no branch on a coin toss).
    pub(super) fn next_turns(&mut self, turns: &mut [u32], at_least: usize) -> usize {
        let rounds = self.rounds;
        let mut count = 0;
        while count < at_least && self.round < rounds {
            // Two passes: the first has no dependence between backends, so it vectorizes.
            for (phase, &quota) in self.phases.iter_mut().zip(&self.quotas) {
                step_phase(phase, quota, rounds);
            }
            let due = self
                .phases
                .iter()
                .zip(&self.quotas)
                .zip(&self.indices)
                .map(|((&phase, &quota), &index)| (index, is_due(phase, quota)));
            count += keep_due(turns.get_mut(count..).unwrap_or_default(), due);
            self.round += 1;
        }
        count
    }
}

/// Moves a backend's (or a quota group's) phase on by one round (see [`Calendar`]) and tells
/// whether it is due in that round. phase + quota < 2Q, so the subtraction wraps exactly
/// when the sum is below Q.
#[inline(always)]
fn step_phase(phase: &mut u32, quota: u32, rounds: u32) -> bool {
    let sum = *phase + quota;
    *phase = sum.min(sum.wrapping_sub(rounds));
    is_due(*phase, quota)
}

/// Whether a phase just stepped means a turn in this round: the new phase is below the quota
/// exactly when the sum reached Q.
#[inline(always)]
fn is_due(phase: u32, quota: u32) -> bool {
    phase < quota
}

/// Writes the indices marked due to the front of `turns`, in order, and returns how many.
/// Every index is written and only a due one's kept: a branch on "due" would be a coin toss
/// per backend. `turns` needs room for one more index than are due.
#[inline(always)]
fn keep_due(turns: &mut [u32], due: impl Iterator<Item = (u32, bool)>) -> usize {
    let mut count = 0;
    for (index, due) in due {
        if let Some(turn) = turns.get_mut(count) {
            *turn = index;
        }
        count += usize::from(due);
    }
    count
}

/// Every turn's backend index in turn order, by counting the turns per round and then placing
/// them (O(M + Q)).
pub(super) fn turn_order_by_counting(quotas: &[u32], rounds: u32) -> Vec<u32> {
    // `starts[r]` becomes the position of round r's first turn.
    let mut starts = vec![0u32; rounds as usize + 1];
    for &quota in quotas {
        for round in turn_rounds(quota, rounds) {
            if let Some(count) = starts.get_mut(round as usize + 1) {
                *count += 1;
            }
        }
    }
    let mut position = 0;
    for start in starts.iter_mut() {
        position += *start;
        *start = position;
    }
    let mut turns = vec![0u32; position as usize];
    for (index, &quota) in quotas.iter().enumerate() {
        for round in turn_rounds(quota, rounds) {
            if let Some(start) = starts.get_mut(round as usize) {
                if let Some(turn) = turns.get_mut(*start as usize) {
                    *turn = index as u32;
                }
                *start += 1;
            }
        }
    }
    turns
}

/// The rounds of a backend's turns, floor(k * Q / quota) for k = 0 .. quota - 1, by adding
/// Q / quota and carrying the remainder: no division per turn.
fn turn_rounds(quota: u32, rounds: u32) -> impl Iterator<Item = u32> {
    let quota_or_1 = quota.max(1);
    let (whole, fraction) = (rounds / quota_or_1, rounds % quota_or_1);
    let (mut round, mut carry) = (0u32, 0u32);
    (0..quota).map(move |_| {
        let this = round;
        carry += fraction;
        // Written to compile to a conditional move: the carry is a coin toss per turn.
        let wraps = carry >= quota_or_1;
        carry -= if wraps { quota_or_1 } else { 0 };
        round += whole + u32::from(wraps);
        this
    })
}
