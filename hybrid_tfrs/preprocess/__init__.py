"""hybrid-tfrs-preprocess: own interaction logs -> prepared TFRecord shards, with Apache Beam.

``rows`` parses files into events or dead letters (no Beam), ``example`` writes
tf.train.Example bytes (no TensorFlow), ``pipeline`` is the Beam pipeline.
The format is described in hybrid_tfrs.data.prepared.
"""
