{#- The partition window [min_date, max_date) Dagster passes as vars, plus the lookback start for windows
    that reach back `lookback_days` before the first day of the window. Dates are ISO strings. -#}
{% macro partition_window(lookback_days=0) %}
  {%- set min_date = var('min_date') -%}
  {%- set max_date = var('max_date') -%}
  {%- set start = modules.datetime.date.fromisoformat(min_date) - modules.datetime.timedelta(days=lookback_days) -%}
  {{ return({'min_date': min_date, 'max_date': max_date, 'lookback_start': start.isoformat()}) }}
{% endmacro %}

{#- RANGE frame offset over millisecond timestamps for an n-day window of a row stamped 1 ms after its moment t:
    `range between <this> preceding and current row` covers [t + 1 - n days, t] = [stamp - n days, stamp). -#}
{% macro days_before_stamp_ms(n) %}{{ n * 86400000 - 1 }}{% endmacro %}

{% macro ms_to_timestamp(ms) %}{{ return(adapter.dispatch('ms_to_timestamp')(ms)) }}{% endmacro %}
{% macro duckdb__ms_to_timestamp(ms) %}make_timestamp(({{ ms }}) * 1000){% endmacro %}
{% macro bigquery__ms_to_timestamp(ms) %}timestamp_millis({{ ms }}){% endmacro %}

{#- An ordered list aggregate that skips nulls (so "no earlier items" is an empty list). -#}
{% macro ordered_list(expr, order_by) %}{{ return(adapter.dispatch('ordered_list')(expr, order_by)) }}{% endmacro %}
{% macro duckdb__ordered_list(expr, order_by) %}coalesce(list({{ expr }} order by {{ order_by }}) filter (where {{ expr }} is not null), []){% endmacro %}
{% macro bigquery__ordered_list(expr, order_by) %}array_agg({{ expr }} ignore nulls order by {{ order_by }}){% endmacro %}

{#- Incremental config shared by the partitioned feature models: replace whole partition_date partitions. -#}
{% macro partitioned_incremental_config() %}
  {%- if target.type == 'bigquery' -%}
    {{ return({'incremental_strategy': 'insert_overwrite',
               'partition_by': {'field': 'partition_date', 'data_type': 'date'}}) }}
  {%- else -%}
    {{ return({'incremental_strategy': 'delete+insert', 'unique_key': 'partition_date'}) }}
  {%- endif -%}
{% endmacro %}
