"""OUTPUT_DIR/metrics.json with every evaluation in it.

fastreid's `JSONWriter` skips every scalar put at an iteration at or before the last one it wrote.
An evaluation at the end of an epoch is put at that epoch's last iteration, which `PeriodicWriter`
has just written when the epoch length is a multiple of its period (20) or when the epoch is the
last one; and the final evaluation that `EvalHook.after_train` runs comes after the last write. So
metrics.json lacked those evaluations, the final one always.

`MetricsJSONWriter` keeps fastreid's format (one JSON object per write and iteration, appended) and
decides per scalar: a value is written when the scalar was put since it was last written (its
history grew, or its iteration is newer); closing writes what is still pending. An evaluation put
at an iteration already written therefore gets a second line with the same "iteration". Readers that take the last value
of a key per line (jq, `tools.diagnostics.read_metrics`) read it as before.
"""
import json
import os
from collections import defaultdict

from fastreid.utils.events import JSONWriter, _CURRENT_STORAGE_STACK, get_event_storage


class MetricsJSONWriter(JSONWriter):
    """fastreid's JSONWriter(json_file, window_size=20), writing scalars per key (see the module)."""

    def __init__(self, json_file, window_size=20):
        super().__init__(json_file, window_size)
        self._written = {}   # scalar name -> (iteration, history length) when last written

    def write(self):
        storage = get_event_storage()
        to_save = defaultdict(dict)
        for k, (v, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            mark = (itr, len(storage.history(k).values()))
            if k not in self._written or mark > self._written[k]:
                to_save[itr][k] = v
                self._written[k] = mark
        for itr in sorted(to_save):
            self._file_handle.write(json.dumps({**to_save[itr], "iteration": itr}, sort_keys=True) + "\n")
        self._file_handle.flush()
        try:
            os.fsync(self._file_handle.fileno())
        except (AttributeError, OSError):   # not a real file (a stream, a PathManager handler)
            pass

    def close(self):
        """Write what is pending (the final evaluation, put after the last periodic write), then
        close. Outside an EventStorage (nothing can be pending) it only closes."""
        if _CURRENT_STORAGE_STACK and not self._file_handle.closed:
            self.write()
        super().close()
