namespace OdaKvmBackup.WayBack.Tests;

public class PrunePolicyTests
{
    private static readonly DateTime Now = new(2026, 11, 28, 12, 0, 0, DateTimeKind.Utc);

    /// <summary>"vm:5C" = a set of vm started 5 days ago, Complete (C), Incomplete (I) or InProgress (P).</summary>
    private static List<PruneCandidate> Sets(string spec) => spec.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(s =>
    {
        var (domain, rest) = (s[..s.IndexOf(':')], s[(s.IndexOf(':') + 1)..]);
        var days = double.Parse(rest[..^1], System.Globalization.CultureInfo.InvariantCulture);
        var status = rest[^1] switch { 'C' => BackupSetStatus.Complete, 'I' => BackupSetStatus.Incomplete, _ => BackupSetStatus.InProgress };
        var started = Now.AddDays(-days);
        return new PruneCandidate(domain, BackupNames.RunId(started), started, status);
    }).ToList();

    public static TheoryData<string, int?, int?, string> Cases => new()
    {
        // sets, KeepLast, KeepDays, the ones removed (as in the spec)
        { "vm:5C vm:4C vm:3I vm:2C vm:1C", 2, null, "vm:5C vm:4C vm:3I" },
        { "vm:5C vm:4C vm:3I vm:2C vm:1C", 0, null, "vm:5C vm:4C vm:3I vm:2C" },
        { "vm:5C vm:4C vm:3I vm:2C vm:1C", null, 0, "vm:5C vm:4C vm:3I vm:2C" },
        { "vm:5C vm:4C vm:3I vm:2C vm:1C", 10, null, "vm:3I" },
        { "vm:5C vm:4C vm:3I vm:2C vm:1C", null, 4, "vm:5C vm:4C" },
        { "vm:5C vm:4C vm:3I vm:2C vm:1C", 1, 3, "vm:5C vm:4C vm:3I" },
        // a set is kept when any rule keeps it: 4C is the 3rd newest Complete (KeepLast 3), 3I is young enough
        { "vm:5C vm:4C vm:3I vm:2C vm:1C", 3, 4, "vm:5C" },
        // the newest set is Incomplete: the newest Complete one stays whatever the policy
        { "vm:3C vm:2C vm:0.1I", 0, 0, "vm:3C vm:0.1I" },
        // an InProgress set is never removed; it does not count as Complete
        { "vm:3C vm:2C vm:1P", 1, null, "vm:3C" },
        // domains are judged one by one
        { "a:3C a:2C a:1C b:9C b:8I", 1, null, "a:3C a:2C b:8I" },
        // only Incomplete sets: nothing worth keeping
        { "vm:2I vm:1I", 5, null, "vm:2I vm:1I" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_policy_removes_exactly_the_expected_sets(string spec, int? keepLast, int? keepDays, string expectedRemoved)
    {
        var sets = Sets(spec);
        var decisions = PrunePolicy.Decide(sets, keepLast, keepDays, Now);
        Assert.Equal(sets.Count, decisions.Count);
        var removed = decisions.Where(d => d.Remove).Select(d => d.Set).OrderBy(s => s.DomainName).ThenBy(s => s.TimeUtc).ToList();
        var expected = Sets(expectedRemoved).OrderBy(s => s.DomainName).ThenBy(s => s.TimeUtc).ToList();
        Assert.Equal(expected.Select(s => s.DomainName + s.RunId), removed.Select(s => s.DomainName + s.RunId));
        Assert.All(decisions, d => Assert.False(string.IsNullOrWhiteSpace(d.Reason)));
    }

    [Theory]
    [InlineData(0, null)]
    [InlineData(null, 0)]
    [InlineData(0, 0)]
    public void The_newest_Complete_set_of_a_domain_is_never_removed(int? keepLast, int? keepDays)
    {
        var decisions = PrunePolicy.Decide(Sets("vm:30C vm:20C vm:10C vm:1I"), keepLast, keepDays, Now);
        var newest = decisions.Single(d => d.Set.TimeUtc == Now.AddDays(-10));
        Assert.False(newest.Remove);
        Assert.Contains("newest Complete", newest.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Reasons_say_which_rule_decided()
    {
        var decisions = PrunePolicy.Decide(Sets("vm:5C vm:4C vm:3I vm:2C vm:1C"), 2, null, Now).ToDictionary(d => d.Set.TimeUtc);
        Assert.Contains("beyond -KeepLast 2", decisions[Now.AddDays(-5)].Reason, StringComparison.Ordinal);
        Assert.Contains("4th newest Complete", decisions[Now.AddDays(-5)].Reason, StringComparison.Ordinal);
        Assert.Contains("Incomplete (cannot be restored from)", decisions[Now.AddDays(-3)].Reason, StringComparison.Ordinal);
        Assert.Contains("within -KeepLast 2", decisions[Now.AddDays(-2)].Reason, StringComparison.Ordinal);
        Assert.Contains("newest Complete", decisions[Now.AddDays(-1)].Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void A_set_dated_in_the_future_stops_pruning_of_its_domain_naming_it_and_the_other_domains_are_still_pruned()
    {
        var sets = Sets("vm:3C vm:2C vm:1C b:2C b:1C");
        var future = new DateTime(2099, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        sets.Add(new PruneCandidate("vm", BackupNames.RunId(future), future, BackupSetStatus.Complete));

        var decisions = PrunePolicy.Decide(sets, 1, null, Now);

        Assert.Equal(sets.Count, decisions.Count);
        Assert.DoesNotContain(decisions, d => d.Remove && d.Set.DomainName == "vm");
        Assert.All(decisions.Where(d => d.Set.DomainName == "vm"), d => Assert.Contains("20990101-000000", d.Reason, StringComparison.Ordinal));
        Assert.Equal(["b " + BackupNames.RunId(Now.AddDays(-2))], decisions.Where(d => d.Remove).Select(d => d.Set.DomainName + " " + d.Set.RunId));
    }

    [Fact]
    public void A_set_a_few_minutes_ahead_of_the_clock_is_not_in_the_future()
    {
        var sets = Sets("vm:3C vm:2C");
        var soon = Now.AddMinutes(5);
        sets.Add(new PruneCandidate("vm", BackupNames.RunId(soon), soon, BackupSetStatus.Complete));

        var removed = PrunePolicy.Decide(sets, 1, null, Now).Where(d => d.Remove).Select(d => d.Set.RunId).Order(StringComparer.Ordinal);

        Assert.Equal([BackupNames.RunId(Now.AddDays(-3)), BackupNames.RunId(Now.AddDays(-2))], removed);
    }

    [Fact]
    public void Without_a_policy_nothing_is_decided()
    {
        var ex = Assert.Throws<BackupException>(() => PrunePolicy.Decide(Sets("vm:1C"), null, null, Now));
        Assert.Equal(ErrorIds.NoRetentionPolicy, ex.ErrorId);
    }

    [Fact]
    public void Retained_overlays_go_by_age_only()
    {
        var runs = Sets("vm:30C vm:8C vm:6C vm:0.5C");
        var decisions = PrunePolicy.DecideOverlays(runs, 7, Now);
        Assert.Equal([true, true, false, false], decisions.Select(d => d.Remove));
        Assert.Contains("older than -OverlayKeepDays 7", decisions[0].Reason, StringComparison.Ordinal);
    }
}
