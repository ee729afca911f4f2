"""Neural-network building blocks of the study (auxiliary norms for synthetic images)."""
