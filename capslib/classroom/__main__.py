import sys

from capslib.classroom.cli import main

sys.exit(main())
