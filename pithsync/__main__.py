from pithsync.cli import main

raise SystemExit(main())
