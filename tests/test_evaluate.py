"""`arasc evaluate` without Ray: the metrics by hand, batching with a padded last batch, how samples
are cut into tasks, and the data set's errors (exit 2, before any Ray starts). The Ray side and the
digits accuracy are in tests/test_sweep_ray.py."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arasc.cli import main
from arasc.evaluate import classification, ranges, run_samples, similarity
from arasc.models.digits import load_digits_split
from arasc.runtime.run import execute, load_program

from conftest import compiled


def test_top1_and_top5_by_hand():
    logits = np.array([[0, 9, 1, 2, 3, 4, 5],     # label 1: top-1
                       [9, 8, 7, 6, 5, 4, 3],     # label 4: fifth highest, top-5 only
                       [9, 8, 7, 6, 5, 4, 3],     # label 5: sixth, neither
                       [1, 1, 0, 0, 0, 0, 0]])    # label 1: a tie goes to class 0, so not top-1
    assert classification(logits, np.array([1, 4, 5, 1])) == {"top1": 0.25, "top5": 0.75}
    assert classification(logits[:, :3], np.array([1, 1, 0, 1])) == {"top1": 0.5}  # fewer than 5 classes


def test_cosine_to_targets_by_hand():
    outputs = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    targets = np.array([[2.0, 0.0], [1.0, -1.0], [0.0, 0.0]])  # 1, 0, and two zero vectors agree: 1
    assert similarity(outputs, targets) == pytest.approx({"cosine_mean": 2 / 3, "cosine_min": 0.0})


@given(n=st.integers(1, 200), batch=st.integers(1, 16), tasks=st.integers(1, 12))
def test_ranges_cover_every_sample_once_in_whole_batches(n, batch, tasks):
    cut = ranges(n, batch, tasks)
    assert cut[0][0] == 0 and cut[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(cut, cut[1:], strict=False))
    assert all(start % batch == 0 for start, _ in cut) and len(cut) <= max(tasks, 1)


def test_a_partial_last_batch_gives_the_outputs_its_samples_get_in_a_full_batch():
    _, path = compiled("digits-cnn")
    program, weights, hw = load_program(path)
    _, _, x_test, _ = load_digits_split()
    x = x_test[:13].numpy()
    name = program.inputs[0].name
    got = run_samples(program, weights, hw, {name: x}, 0, 13)
    first = execute(program, weights, hw, {name: x[:8]}).outputs
    last = execute(program, weights, hw, {name: x[5:13]}).outputs
    (first,), (last,) = first.values(), last.values()
    np.testing.assert_array_equal(got, np.concatenate([first, last[3:]]))


@pytest.mark.parametrize("arrays, message", [
    ({"labels": np.zeros(4, np.int64)}, "no array"),
    ({"x": np.zeros((4, 1, 8, 9), np.float32), "labels": np.zeros(4, np.int64)}, "shape [4, 1, 8, 9] float32"),
    ({"x": np.zeros((4, 1, 8, 8), np.float32)}, "no `labels`"),
    ({"x": np.zeros((4, 1, 8, 8), np.float32), "labels": np.zeros(3, np.int64)}, "different numbers of samples"),
    ({"x": np.zeros((4, 1, 8, 8), np.float32), "labels": np.full(4, 10)}, "labels 10..10 outside the program's 10"),
    ({"x": np.zeros((4, 1, 8, 8), np.float32), "targets": np.zeros((4, 3))}, "targets of shape [4, 3]"),
])
def test_a_bad_dataset_is_exit_2_naming_the_file(capfd, tmp_path, arrays, message):
    pytest.importorskip("ray", reason="evaluate checks for Ray first")
    _, path = compiled("digits-cnn")
    np.savez(tmp_path / "d.npz", **arrays)
    assert main(["evaluate", path, "--dataset", str(tmp_path / "d.npz")]) == 2
    err = capfd.readouterr().err
    assert f"--dataset {tmp_path / 'd.npz'}" in err and message in err and "Traceback" not in err, err
