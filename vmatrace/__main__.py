try:
    from vmatrace.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python loads the command line: exit as interrupted, quietly
    raise SystemExit(130) from None

raise SystemExit(main())
