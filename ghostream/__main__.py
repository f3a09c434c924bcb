import sys

from ghostream.cli import main

sys.exit(main())
