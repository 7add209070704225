"""pithsync: crawl, verify and compare Pith Open Graph mirrors."""

__version__ = "0.1.0"
