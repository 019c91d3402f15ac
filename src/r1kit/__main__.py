from r1kit.cli import main

raise SystemExit(main())
