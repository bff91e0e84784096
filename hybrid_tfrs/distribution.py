"""Training across devices and machines with ``tf.distribute`` (TensorFlow only).

``make_strategy(name)`` builds the strategy of ``--distribution_strategy``:

- ``off``: TensorFlow's default strategy (one device, nothing replicated);
- ``one_device``: everything on the first GPU, or the CPU;
- ``mirrored``: synchronous data parallelism over the local GPUs (or the CPU);
- ``multi_worker_mirrored``: the same over several machines, the cluster read
  from the ``TF_CONFIG`` environment variable.

The batch size is the global one: each step's batch is split evenly over the
``num_replicas_in_sync`` replicas and their gradients are summed (the loss is
scaled for that, see ``SequentialRetrievalModel.compute_loss``; ``check_settings``
refuses the settings whose replicated step is not the single-device one).
Worker 0 (or the ``chief`` task) is the chief: it alone writes files. A worker
waits at most ``--collective_timeout_seconds`` for the others to start.

Keras 3.15's ``fit`` does not run under ``MultiWorkerMirroredStrategy``
(keras-team/keras#20585: it reduces the first input batch and the scalar logs
across workers in ways the strategy rejects), so ``multi_worker_fit`` trains
with a plain ``strategy.run`` loop instead and drives the same Keras callbacks.
"""

import re
import time

import keras
import tensorflow as tf

from hybrid_tfrs import run_dir
from hybrid_tfrs.config import DISTRIBUTION_STRATEGIES, cluster_from_tf_config, is_chief_task

# The tasks of MultiWorkerMirroredStrategy's coordination service, and how
# TensorFlow's errors name one.
COORDINATED_JOBS = ("chief", "worker")
TASK_NAME = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")


def make_strategy(name, collective_timeout_seconds=120.0):
    """The ``tf.distribute.Strategy`` of ``--distribution_strategy=name``.

    ``mirrored`` takes every local GPU, or else every logical CPU device (one
    unless the process configured more). Under ``multi_worker_mirrored`` a
    worker gives up on a peer not started, or lost, after
    ``collective_timeout_seconds``: ValueError naming the workers not reached at
    start-up, TensorFlow's own collective error for a peer lost later.
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
    cluster = cluster_from_tf_config()["cluster"]
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if resolver.task_type in COORDINATED_JOBS:
        _bound_wait_for_cluster(resolver, collective_timeout_seconds)
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=collective_timeout_seconds
    )
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver, communication_options=options
        )
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as error:
        me = (resolver.task_type, resolver.task_id)
        missing = ", ".join(
            f"{job} {index} ({cluster[job][index]})"
            for job, index in _unreached_tasks(error.message, cluster, me)
        )
        raise ValueError(
            f"TF_CONFIG: {missing} not reached within --collective_timeout_seconds="
            f"{collective_timeout_seconds:g} (started? at that host:port?)"
        ) from None


def _bound_wait_for_cluster(resolver, timeout_seconds):
    """Ends the start-up wait for the other workers after ``timeout_seconds``.

    TensorFlow 2.21 waits for them forever in ``context.ensure_initialized`` (its
    coordination service turns off the health check that
    ``_check_health_initial_timeout`` bounds) and has no public setting for it:
    this configures the service as the strategy would (``_initialize_multi_worker``
    in collective_all_reduce_strategy.py), plus the deadline.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    spec = resolver.cluster_spec()
    jobs = [
        coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
        for job in COORDINATED_JOBS
        if job in spec.jobs
    ]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        cluster_register_timeout_in_ms=int(timeout_seconds * 1000),
        coordinated_jobs=jobs,
    )
    # Without the barrier the leader (worker 0 or the chief) waits on alone.
    context.context().coordination_service.cluster_register_with_barrier = True


def _unreached_tasks(message, cluster, me):
    """``[(job, index)]`` of the tasks a start-up error names, other than ``me``;
    every other task when it names none."""
    named = message.split("timed out task names:")[-1]
    found = {(job, int(index)) for job, index in TASK_NAME.findall(named)}
    others = [
        (job, index)
        for job in COORDINATED_JOBS
        for index in range(len(cluster.get(job, [])))
        if (job, index) != me
    ]
    return [task for task in others if task in found] or others


def check_settings(config, strategy):
    """Raises ValueError naming the flag for a setting ``strategy`` cannot train as one device."""
    replicas = strategy.num_replicas_in_sync
    if config.loss_normalization == "batch" and replicas > 1:
        raise ValueError(
            f"--loss_normalization='batch': each of the {replicas} replicas of "
            f"--distribution_strategy={config.distribution_strategy} would average its own "
            "targets, not the batch's; use --loss_normalization=target"
        )


def is_multi_worker(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return bool(resolver and resolver.cluster_spec().as_dict())


def is_chief(strategy):
    """Whether this process writes the run's files (always, outside a cluster)."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    return is_chief_task(resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict())


def run_strategy(config, state, log=print):
    """The strategy of ``--distribution_strategy`` for a run at ``state`` (None: a
    new run), or None when this worker has nothing left to do.

    A multi-worker run whose training is done needs no cluster: the chief (its
    final evaluation cut short, e.g. by a kill) evaluates alone under the
    default strategy, and any other worker gets None, so restarting only the
    chief finishes the job.
    """
    if run_dir.nothing_left_here(config, state):
        return None
    multi_worker = config.distribution_strategy == "multi_worker_mirrored"
    if multi_worker and run_dir.training_done(state, config):
        log("training is done; the chief evaluates without the other workers")
        return make_strategy("off")
    return make_strategy(config.distribution_strategy, config.collective_timeout_seconds)


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
            loss = model.compute_loss(x=inputs, y=targets, y_pred=hidden, training=True)
            # multiplied by the loss scale under mixed_float16; ``apply`` divides it out
            scaled = model.optimizer.scale_loss(loss)
        model.optimizer.apply(tape.gradient(scaled, variables), variables)
        return loss

    @tf.function(reduce_retracing=True)
    def train_step(inputs, targets):
        per_replica = strategy.run(replica_step, args=(inputs, targets))
        # each replica's loss is its share of the global one (compute_loss), so they sum to it
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
