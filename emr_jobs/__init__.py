"""The EMR Serverless Spark margin job: positions, margin and stress from the Kafka streams.

Everything under this package except ``package.py`` and ``local_runner.py`` ships to EMR
Serverless in the ``spark.submit.pyFiles`` zip, so it stays Python 3.9 compatible and imports only
pyspark and the standard library (plus ``margin_risk.params`` / ``margin_risk.names``).
"""

# The EMR release the job runs on. emr-7.10.0 ships Spark 3.5.5 (our pinned pyspark) and Python
# 3.9 as the default interpreter of its Amazon Linux 2023 image; streaming job runs need >= 7.1.0.
EMR_RELEASE_LABEL = "emr-7.10.0"
EMR_SPARK_VERSION = "3.5.5"
