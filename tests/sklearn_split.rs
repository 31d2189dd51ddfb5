//! NumPy's legacy `RandomState` and scikit-learn's `train_test_split`, checked against outputs of
//! NumPy and scikit-learn themselves: tests/fixtures/sklearn_split.json, written by
//! tests/fixtures/make_sklearn_split.py (rerun it to regenerate; this test needs no Python).

use serde_json::Value;
use wgnn::numpy_random::NumpyRandomState;
use wgnn::train_test_split::train_test_split_indices;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sklearn_split.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fixture's list `name`, which must not be empty (an empty list would pass every check).
fn cases<'a>(fixture: &'a Value, name: &str) -> &'a [Value] {
    let list = fixture[name].as_array().unwrap_or_else(|| panic!("fixture has no list `{name}`"));
    assert!(!list.is_empty(), "fixture list `{name}` is empty");
    list
}

fn uint(case: &Value, key: &str) -> u64 {
    case[key].as_u64().unwrap_or_else(|| panic!("`{key}` is not an unsigned integer in {case}"))
}

fn seed(case: &Value) -> u32 {
    u32::try_from(uint(case, "seed")).expect("NumPy seeds fit in u32")
}

fn uints(case: &Value, key: &str) -> Vec<u64> {
    let list = case[key].as_array().unwrap_or_else(|| panic!("`{key}` is not a list in {case}"));
    list.iter().map(|v| v.as_u64().unwrap_or_else(|| panic!("`{key}` holds {v}"))).collect()
}

fn indices(case: &Value, key: &str) -> Vec<usize> {
    uints(case, key).into_iter().map(|v| v as usize).collect()
}

#[test]
fn raw_outputs_match_numpy_for_integer_seeds() {
    let fixture = fixture();
    for case in cases(&fixture, "raw_u32") {
        let mut rng = NumpyRandomState::new(seed(case));
        let got: Vec<u64> = uints(case, "u32").iter().map(|_| rng.next_u32() as u64).collect();
        assert_eq!(got, uints(case, "u32"), "seed {}", seed(case));
    }
}

/// Also pins how many draws the rejections consumed: the raw output that follows must match.
#[test]
fn random_interval_matches_numpy_masked_rejection() {
    let fixture = fixture();
    for case in cases(&fixture, "random_interval") {
        let max = uint(case, "max");
        let mut rng = NumpyRandomState::new(seed(case));
        let want = uints(case, "values");
        let got: Vec<u64> = want.iter().map(|_| rng.random_interval(max)).collect();
        assert_eq!(got, want, "seed {} max {max}", seed(case));
        assert_eq!(
            rng.next_u32() as u64,
            uint(case, "next_u32"),
            "stream position after seed {} max {max}",
            seed(case)
        );
    }
}

#[test]
fn permutation_matches_numpy() {
    let fixture = fixture();
    let mut rejecting = false;
    for case in cases(&fixture, "permutations") {
        let n = uint(case, "n") as usize;
        rejecting |= n == 1000;
        let want = indices(case, "permutation");
        assert_eq!(want.len(), n, "fixture permutation length");
        assert_eq!(NumpyRandomState::new(seed(case)).permutation(n), want, "n {n} seed {}", seed(case));
    }
    assert!(rejecting, "the fixture must hold an n where the mask rejection matters (1000)");
}

#[test]
fn train_test_split_matches_scikit_learn() {
    let fixture = fixture();
    for case in cases(&fixture, "train_test_split") {
        let n = uint(case, "n") as usize;
        let test_size = case["test_size"].as_f64().expect("test_size is a number");
        let (train, test) = train_test_split_indices(n, test_size, seed(case)).unwrap();
        assert_eq!(test, indices(case, "test"), "test rows of n {n} test_size {test_size} seed {}", seed(case));
        assert_eq!(train, indices(case, "train"), "train rows of n {n} test_size {test_size} seed {}", seed(case));
    }
}

/// The split of the tutorial that examples/logistic_regression follows:
/// `train_test_split(X, Y, test_size=0.15, random_state=42)` on its 410 images.
#[test]
fn the_tutorials_split_is_pinned() {
    let fixture = fixture();
    let case = cases(&fixture, "train_test_split")
        .iter()
        .find(|c| uint(c, "n") == 410 && c["test_size"].as_f64() == Some(0.15) && uint(c, "seed") == 42)
        .expect("the fixture holds the tutorial's split");
    let (train, test) = train_test_split_indices(410, 0.15, 42).unwrap();
    assert_eq!((train.len(), test.len()), (348, 62));
    assert_eq!(test, indices(case, "test"));
    assert_eq!(train, indices(case, "train"));
}
