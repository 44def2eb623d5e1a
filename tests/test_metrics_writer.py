"""metrics.json holds every evaluation (plugins.engine.metrics.MetricsJSONWriter): values put at an
iteration already written, and the final evaluation put after the last periodic write."""
import json

from fastreid.utils.events import EventStorage, JSONWriter

from plugins.engine.metrics import MetricsJSONWriter


def _lines(path):
    return [json.loads(line) for line in open(path)]


def _epoch_end_then_final(writer_cls, path):
    """An epoch of 20 iterations: the periodic write at its last iteration, the epoch-end evaluation
    put at that same iteration and written after it; then a final evaluation put after the last
    write and before the writer is closed (fastreid's EvalHook.after_train, PeriodicWriter.after_train)."""
    writer = writer_cls(str(path))
    with EventStorage(0) as storage:
        for it in range(20):
            storage.iter = it
            storage.put_scalars(total_loss=1.0 + it)
        writer.write()                                                       # after_step, iteration 19
        storage.put_scalars(**{"SynthDomain3/mAP": 14.2}, smoothing_hint=False)   # EvalHook.after_epoch
        writer.write()                                                       # PeriodicWriter.after_epoch
        storage.put_scalars(**{"SynthDomain3/mAP": 15.5, "SynthDomain0/mAP": 40.0}, smoothing_hint=False)
        writer.close()                                                       # after_train


def test_every_evaluation_reaches_metrics_json(tmp_path):
    _epoch_end_then_final(MetricsJSONWriter, tmp_path / "m.json")
    lines = _lines(tmp_path / "m.json")
    assert [line["iteration"] for line in lines] == [19, 19, 19]
    assert lines[0] == {"iteration": 19, "total_loss": 10.5}            # median of 1..20 over 20 iterations
    assert lines[1] == {"iteration": 19, "SynthDomain3/mAP": 14.2}      # the loss is not written twice
    assert lines[2] == {"iteration": 19, "SynthDomain3/mAP": 15.5, "SynthDomain0/mAP": 40.0}


def test_fastreid_json_writer_drops_them(tmp_path):
    """The fault MetricsJSONWriter fixes: fastreid's writer keeps only the first line."""
    _epoch_end_then_final(JSONWriter, tmp_path / "m.json")
    assert _lines(tmp_path / "m.json") == [{"iteration": 19, "total_loss": 10.5}]


def test_close_outside_a_storage_only_closes(tmp_path):
    writer = MetricsJSONWriter(str(tmp_path / "m.json"))
    writer.close()
    assert (tmp_path / "m.json").read_text() == ""
