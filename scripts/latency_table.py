"""Measures the per-op LCE latency table of a search (``bats-latency-table``). See
bats_tf/commands/latency_table.py.

python scripts/latency_table.py --flagfile=configs/study_cpu_search.cfg --latency_table=latency.json
"""

from bats_tf.commands.latency_table import run

if __name__ == "__main__":
    run()
