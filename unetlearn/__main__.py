from unetlearn.cli import main
raise SystemExit(main())
