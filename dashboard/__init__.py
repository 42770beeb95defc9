"""Conway's Dash dashboard: the live call graph grouped by team, who to page, and more."""
