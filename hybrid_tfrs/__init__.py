"""hybrid-tfrs: LinRec linear attention + FMLP-Rec filter, blended per user."""
