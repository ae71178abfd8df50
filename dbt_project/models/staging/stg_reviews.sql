-- Reviews as the feature models read them: typed, with the partition day.
select
    user_id,
    parent_asin,
    cast(rating as double) as rating,
    cast(timestamp as bigint) as event_ms,
    partition_date
from {{ source('raw', 'raw_reviews') }}
