"""Training across devices and machines with ``tf.distribute`` (TensorFlow only).

``make_strategy(name)`` builds the strategy of ``--distribution_strategy``:

- ``off``: TensorFlow's default strategy (one device, nothing replicated);
- ``one_device``: everything on the first GPU, or the CPU;
- ``mirrored``: synchronous data parallelism over the local GPUs (or the CPU);
- ``multi_worker_mirrored``: the same over several machines, the cluster read
  from the ``TF_CONFIG`` environment variable.

The batch size is the global one: each step's batch is split evenly over the
``num_replicas_in_sync`` replicas and their gradients are summed (the loss is
scaled for that, see ``SequentialRetrievalModel.compute_loss``). Worker 0 (or
the ``chief`` task) is the chief: it alone writes files.

Keras 3.15's ``fit`` does not run under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585: it reduces the first input batch and the scalar logs
across workers in ways the strategy rejects), so ``multi_worker_fit`` trains
with a plain ``strategy.run`` loop instead and drives the same Keras callbacks.
"""

import time

import keras
import tensorflow as tf

from hybrid_tfrs.config import DISTRIBUTION_STRATEGIES, cluster_from_tf_config


def make_strategy(name, collective_timeout_seconds=120.0):
    """The ``tf.distribute.Strategy`` of ``--distribution_strategy=name``.

    ``mirrored`` takes every local GPU, or else every logical CPU device (one
    unless the process configured more). Under ``multi_worker_mirrored`` a
    worker gives up on a lost peer after ``collective_timeout_seconds``.
    """
    if name not in DISTRIBUTION_STRATEGIES:
        raise ValueError(
            f"--distribution_strategy={name!r}: must be one of {DISTRIBUTION_STRATEGIES}"
        )
    if name == "off":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    cluster_from_tf_config()
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=collective_timeout_seconds
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def is_multi_worker(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return bool(resolver and resolver.cluster_spec().as_dict())


def is_chief(strategy):
    """Whether this process writes the run's files (always, outside a cluster)."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def shard_by_data(dataset):
    """Each worker takes its part of every global batch (the data is in memory, not files)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def multi_worker_fit(model, dataset, epochs, initial_epoch=0, callbacks=(), strategy=None):
    """``model.fit`` for ``MultiWorkerMirroredStrategy``: same steps, same callbacks.

    Args:
        model: a compiled ``SequentialRetrievalModel`` built under ``strategy.scope()``.
        dataset: ``(inputs, targets)`` batches of the global batch size, the same
            on every worker (each takes its part of every batch).
        epochs, initial_epoch: as in ``fit``.
        callbacks: Keras callbacks; ``logs`` has ``loss`` (mean over the epoch's
            steps, all workers) and whatever a callback adds.
        strategy: the strategy (default: the one of the current scope).
    """
    strategy = strategy or tf.distribute.get_strategy()
    distributed = strategy.experimental_distribute_dataset(shard_by_data(dataset))
    variables = model.trainable_variables

    def replica_step(inputs, targets):
        with tf.GradientTape() as tape:
            hidden = model(inputs, training=True)
            loss = model.compute_loss(y=targets, y_pred=hidden, training=True)
        model.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    @tf.function(reduce_retracing=True)
    def train_step(inputs, targets):
        per_replica = strategy.run(replica_step, args=(inputs, targets))
        # compute_loss is scaled by 1/replicas, so the sum is the global loss.
        return strategy.reduce("SUM", per_replica, axis=None)

    callback_list = keras.callbacks.CallbackList(list(callbacks), model=model)
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        total, steps, started = 0.0, 0, time.perf_counter()
        for inputs, targets in distributed:
            total += float(train_step(inputs, targets))
            steps += 1
        logs = {"loss": total / max(steps, 1), "train_seconds": time.perf_counter() - started}
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end()
