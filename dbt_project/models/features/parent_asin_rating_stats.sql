{{ config(**partitioned_incremental_config()) }}
{% set w = partition_window(lookback_days=var('feature_lookback_days')) %}
-- One row per item and review moment t in the window: the item's rating stats once the reviews at t are in,
-- stamped `timestamp` = t + 1 ms, so windows cover [timestamp - N days, timestamp): strictly before the stamp.
-- A point-in-time join for an event at t therefore never sees that event (see user_rating_stats).

with history as (
    select parent_asin, rating, event_ms, partition_date
    from {{ ref('stg_reviews') }}
    where partition_date >= '{{ w.lookback_start }}' and partition_date < '{{ w.max_date }}'
),

moments as (
    select distinct
        parent_asin,
        event_ms,
        partition_date
        {%- for days in var('feature_windows_days') %},
        count(rating) over prev_{{ days }}d as parent_asin_rating_cnt_{{ days }}d,
        avg(rating) over prev_{{ days }}d as parent_asin_rating_avg_prev_rating_{{ days }}d
        {%- endfor %}
    from history
    window
    {%- for days in var('feature_windows_days') %}
        prev_{{ days }}d as (
            partition by parent_asin order by event_ms
            range between {{ days_before_stamp_ms(days) }} preceding and current row
        ){{ "," if not loop.last }}
    {%- endfor %}
)

select
    parent_asin,
    {{ ms_to_timestamp('event_ms + 1') }} as timestamp,
    {%- for days in var('feature_windows_days') %}
    parent_asin_rating_cnt_{{ days }}d,
    parent_asin_rating_avg_prev_rating_{{ days }}d,
    {%- endfor %}
    partition_date
from moments
where partition_date >= '{{ w.min_date }}' and partition_date < '{{ w.max_date }}'
