use super::*;
use std::sync::mpsc;
use std::time::Duration;

/// Runs `body(rank)` on a thread per rank of a new group of `size`, starting them in `order`
/// (a pause between starts, so that they usually arrive in it), and returns each rank's result
/// in rank order.
fn run<T: Send>(size: usize, order: &[usize], body: impl Fn(&ThreadRank) -> T + Sync) -> Vec<T> {
    let mut ranks: Vec<Option<ThreadRank>> = ThreadRank::group(size).unwrap().into_iter().map(Some).collect();
    std::thread::scope(|s| {
        let mut handles: Vec<(usize, _)> = Vec::new();
        for &r in order {
            let rank = ranks[r].take().unwrap();
            let body = &body;
            handles.push((r, s.spawn(move || body(&rank))));
            std::thread::sleep(Duration::from_millis(20));
        }
        handles.sort_by_key(|(r, _)| *r);
        handles.into_iter().map(|(_, h)| h.join().unwrap()).collect()
    })
}

#[test]
fn the_sum_is_in_rank_order_whatever_order_the_threads_arrive_in() {
    // In f32, (1e8 + 1) - 1e8 = 0 but (1e8 - 1e8) + 1 = 1: the order of the terms shows.
    let terms = [1e8f32, 1.0, -1e8];
    let in_rank_order = (terms[0] + terms[1]) + terms[2];
    assert_eq!(in_rank_order, 0.0);
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
        let sums = run(3, &order, |rank| {
            let mut values = vec![terms[rank.rank()], rank.rank() as f32];
            rank.all_reduce_sum_f32(&mut values).map(|()| values)
        });
        for (r, sum) in sums.into_iter().enumerate() {
            assert_eq!(sum.unwrap(), vec![in_rank_order, 3.0], "rank {r}, arrival order {order:?}");
        }
    }
}

#[test]
fn broadcast_min_max_and_barrier_give_every_rank_the_same_answer() {
    let results = run(3, &[1, 0, 2], |rank| -> Result<(Vec<f32>, (u64, u64))> {
        let mut values = vec![rank.rank() as f32 * 10.0; 5];
        rank.broadcast_f32(&mut values, 1)?;
        let min_max = rank.all_reduce_min_max_u64(7 + rank.rank() as u64 * 100)?;
        rank.barrier()?;
        // A second round through the same slots: results do not leak between operations.
        let mut again = vec![rank.rank() as f32];
        rank.broadcast_f32(&mut again, 2)?;
        values.extend(again);
        Ok((values, min_max))
    });
    for (r, result) in results.into_iter().enumerate() {
        let (values, min_max) = result.unwrap();
        assert_eq!(values, vec![10.0, 10.0, 10.0, 10.0, 10.0, 2.0], "rank {r}");
        assert_eq!(min_max, (7, 207), "rank {r}");
    }
}

#[test]
fn different_operations_on_the_ranks_are_an_error_on_every_rank() {
    let results = run(2, &[0, 1], |rank| {
        let mut values = vec![1.0; 4 + rank.rank()];
        rank.all_reduce_sum_f32(&mut values)
    });
    for (r, result) in results.into_iter().enumerate() {
        let detail = format!("{:?}", result.unwrap_err());
        assert!(detail.contains("different operations") && detail.contains("5 values"), "rank {r}: {detail}");
    }
}

/// Rank 0 waits in an all-reduce while rank 1 does `rank1`; rank 0's error, received within a
/// bound (a hang fails the test rather than hanging it).
fn rank0_error_when_rank1(rank1: impl FnOnce(ThreadRank) + Send + 'static) -> String {
    let mut ranks = ThreadRank::group(2).unwrap().into_iter();
    let (rank0, rank1_handle) = (ranks.next().unwrap(), ranks.next().unwrap());
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut values = [1.0f32; 3];
        sender.send(rank0.all_reduce_sum_f32(&mut values)).ok();
    });
    let worker = std::thread::spawn(move || rank1(rank1_handle));
    let result = receiver.recv_timeout(Duration::from_secs(60)).expect("rank 0 returned rather than waiting forever");
    worker.join().ok();
    format!("{}", result.expect_err("rank 0's all-reduce fails"))
}

#[test]
fn a_failed_rank_stops_the_others_with_an_error_naming_it() {
    let detail = rank0_error_when_rank1(|rank| {
        std::thread::sleep(Duration::from_millis(50));
        rank.fail("the device was lost");
    });
    assert!(detail.contains("rank 1 of 2 failed (the device was lost)"), "{detail}");
    assert!(detail.contains("rank 0 stopped in all_reduce_sum_f32"), "{detail}");
}

#[test]
fn a_rank_whose_thread_panics_or_leaves_stops_the_others() {
    let detail = rank0_error_when_rank1(|rank| {
        let _keep = rank;
        std::thread::sleep(Duration::from_millis(50));
        panic!("a bug on rank 1 (this panic is the test's)");
    });
    assert!(detail.contains("rank 1 of 2 failed (its thread panicked)"), "{detail}");
    let detail = rank0_error_when_rank1(drop);
    assert!(detail.contains("rank 1 of 2 failed (it left the group)"), "{detail}");
}

#[test]
fn a_group_of_one_is_the_identity_and_a_group_of_none_is_refused() {
    let rank = ThreadRank::group(1).unwrap().pop().unwrap();
    let mut values = [1.5f32, -2.0];
    rank.all_reduce_sum_f32(&mut values).unwrap();
    rank.broadcast_f32(&mut values, 0).unwrap();
    assert_eq!(values, [1.5, -2.0]);
    assert_eq!(rank.all_reduce_min_max_u64(9).unwrap(), (9, 9));
    assert!(rank.broadcast_f32(&mut values, 1).is_err(), "root 1 of 1 rank");
    assert!(ThreadRank::group(0).is_err());
}
