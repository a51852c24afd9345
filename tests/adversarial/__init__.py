"""The adversarial suite: every verb tried as an unlucky user and as an attacker would, one file per
verb (or group of verbs), each case asserting one error line, the README's exit code, no traceback
and no hang:

* test_adv_info.py           bad traces for the readers (info, info --snapshot, replay, report)
* test_adv_output.py         output-path attacks as root (snapshot -o, import-strace -o, record -o)
* test_adv_snapshot.py       snapshot of PIDs that are not an ordinary live process
* test_adv_record.py         record's life cycle (exec failures, signals, SIGKILL, many children,
                             two recorders) and the PIDs record -p refuses
* test_adv_import_strace.py  strace logs: truncated, unpaired, non-UTF-8, binary, without -f,
                             pipes and FIFOs, overlong lines, executables that are FIFOs
"""
