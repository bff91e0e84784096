"""A progress bar for a terminal: one line redrawn in place, erased before each log line.

Only for an interactive stdout; a log file gets the epoch summary lines alone.
"""

import time

import keras


class TerminalProgress(keras.callbacks.Callback):
    """Shows epoch, batch and running loss; ``log`` prints a line above it."""

    def __init__(self, stream, min_interval=0.2):
        super().__init__()
        self.stream = stream
        self.min_interval = min_interval
        self.shown = 0  # characters of the bar now on screen
        self.batches_per_epoch = None  # learnt in the first epoch if Keras does not know it
        self.batches_seen = 0
        self.epoch = 0
        self.epoch_started = 0.0
        self.last_drawn = 0.0

    def log(self, message):
        self._erase()
        print(message, file=self.stream, flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_started = self.last_drawn = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.batches_seen = batch + 1
        now = time.perf_counter()
        if now - self.last_drawn < self.min_interval:
            return
        self.last_drawn = now
        total = self.params.get("steps") or self.batches_per_epoch
        loss = f" - loss {float(logs['loss']):.4f}" if logs and "loss" in logs else ""
        self._draw(
            f"{self._epoch_label()} - batch {batch + 1}{f'/{total}' if total else ''}"
            f"{loss} - {now - self.epoch_started:.0f}s"
        )

    def on_epoch_end(self, epoch, logs=None):
        self.batches_per_epoch = self.batches_seen
        self._draw(f"{self._epoch_label()} - validating")

    def _epoch_label(self):
        return f"epoch {self.epoch + 1}/{self.params.get('epochs', '?')}"

    def _draw(self, text):
        self.stream.write("\r" + text.ljust(self.shown))
        self.stream.flush()
        self.shown = len(text)

    def _erase(self):
        if self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.shown = 0
