from vmatrace.cli import main

raise SystemExit(main())
