//! Multi-row statements: a run of rows for one table goes in statements of
//! 32, 16, ..., 1 rows, so a statement's step, reset and cursor setup serve
//! many rows, and six statements cover every count (all stay in the
//! statement cache). Rows of one statement apply in order, as with one
//! statement per row.

/// Most rows one statement writes.
pub const MAX_ROWS: usize = 32;

/// The statements `head VALUES row,row,... tail` of 1, 2, 4, ...
/// [`MAX_ROWS`] rows, indexed by [`chunk`]'s shift.
pub fn statements(head: &str, row: &str, tail: &str) -> Vec<String> {
    (0..=MAX_ROWS.trailing_zeros())
        .map(|shift| {
            let values = vec![row; 1 << shift].join(",");
            format!("{head} VALUES {values} {tail}")
        })
        .collect()
}

/// For `left` rows still to write (at least one): the index into
/// [`statements`] of the next statement, and how many rows it takes.
pub fn chunk(left: usize) -> (usize, usize) {
    let shift = left.min(MAX_ROWS).ilog2() as usize;
    (shift, 1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_into_falling_powers_of_two_up_to_the_maximum() {
        let split = |mut left: usize| {
            let mut sizes = Vec::new();
            while left > 0 {
                let (_, n) = chunk(left);
                sizes.push(n);
                left -= n;
            }
            sizes
        };
        assert_eq!(split(1), [1]);
        assert_eq!(split(63), [32, 16, 8, 4, 2, 1]);
        assert_eq!(split(70), [32, 32, 4, 2]);
        let sql = statements("INSERT INTO t (a, b)", "(?,?)", "");
        assert_eq!(sql.len(), 6);
        assert_eq!(
            sql[chunk(3).0].trim_end(),
            "INSERT INTO t (a, b) VALUES (?,?),(?,?)"
        );
    }
}
