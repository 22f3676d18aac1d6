using System.Text.Json.Nodes;
using OdaKvmBackup.WayBack.Tests.Support;

namespace OdaKvmBackup.WayBack.Tests;

/// <summary>
/// Remove-KvmBackup's plan over real sets in a store (issue 13): sets are grouped by the folder they sit in and
/// ordered by their run id; a set dated in the future, or whose manifest's time is far from its run id, stops the
/// pruning of its VM with an error naming it, and the other VMs are pruned.
/// </summary>
public sealed class PruneByLayoutTests : IDisposable
{
    private static readonly DateTime Now = new(2026, 11, 28, 12, 0, 0, DateTimeKind.Utc);
    private readonly TempFolder _root = new();
    private readonly LocalBackupStore _store;

    public PruneByLayoutTests() => _store = new LocalBackupStore(_root.Path);

    public void Dispose() => _root.Dispose();

    private Task<BackupSetInfo> SetAsync(string domain, DateTime runUtc) => Sets.WriteAsync(_store, _root.Path, domain, runUtc);

    /// <summary>Rewrites the StartedUtc a set's manifest claims, as whoever writes to the store can.</summary>
    private async Task ClaimAsync(BackupSetInfo set, DateTime startedUtc)
    {
        var path = _root.Combine(set.DomainName, set.RunId, BackupNames.ManifestFileName);
        var json = JsonNode.Parse(await File.ReadAllTextAsync(path))!.AsObject();
        json["StartedUtc"] = startedUtc;
        await File.WriteAllTextAsync(path, json.ToJsonString());
    }

    private async Task<IReadOnlyList<BackupSetInfo>> ListAsync() => (await BackupCatalog.ListAsync(_store, null, CancellationToken.None)).Sets;

    [Fact]
    public async Task A_set_dated_2099_stops_pruning_of_its_VM_with_an_error_naming_it_and_the_other_VM_is_pruned()
    {
        await SetAsync("vm", Now.AddDays(-3));
        await SetAsync("vm", Now.AddDays(-2));
        await SetAsync("vm", Now.AddDays(-1));
        var forged = await SetAsync("vm", new DateTime(2099, 1, 1, 0, 0, 0, DateTimeKind.Utc));
        var otherOld = await SetAsync("other", Now.AddDays(-2));
        await SetAsync("other", Now.AddDays(-1));

        var plan = PruneService.PlanSets(await ListAsync(), 1, null, Now);

        Assert.Equal([otherOld.Location], plan.Decisions.Where(d => d.Decision.Remove).Select(d => d.Set.Location));
        var stopped = Assert.Single(plan.Stopped);
        Assert.Equal(ErrorIds.BackupSetOutOfOrder, stopped.ErrorId);
        Assert.Contains(forged.Location, stopped.Message, StringComparison.Ordinal);
        Assert.Contains("future", stopped.Message, StringComparison.Ordinal);
        Assert.Contains("Nothing of 'vm' was removed", stopped.Message, StringComparison.Ordinal);
        Assert.False(string.IsNullOrWhiteSpace(stopped.RecommendedAction));

        // Named on the pipeline, the real newest set is not removed either, nor any other set of that VM.
        var all = await ListAsync();
        foreach (var set in all.Where(s => s.DomainName == "vm"))
            Assert.Equal(ErrorIds.BackupSetOutOfOrder, PruneService.WhyKeptAnyway(set, all, Now)!.ErrorId);
        Assert.Null(PruneService.WhyKeptAnyway(all.Single(s => s.Location == otherOld.Location), all, Now));
        Assert.Equal(ErrorIds.NewestCompleteSetKept, PruneService.WhyKeptAnyway(all.Single(s => s.DomainName == "other" && s.Location != otherOld.Location), all, Now)!.ErrorId);
    }

    [Fact]
    public async Task A_manifest_that_claims_another_time_than_its_run_id_stops_pruning_of_its_VM()
    {
        var old = await SetAsync("vm", Now.AddDays(-3));
        var liar = await SetAsync("vm", Now.AddDays(-2));
        await SetAsync("vm", Now.AddDays(-1));
        await ClaimAsync(liar, Now.AddMinutes(-1));

        var plan = PruneService.PlanSets(await ListAsync(), 1, null, Now);

        Assert.DoesNotContain(plan.Decisions, d => d.Decision.Remove);
        var stopped = Assert.Single(plan.Stopped);
        Assert.Contains(liar.Location, stopped.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(old.Location, stopped.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Sets_are_ordered_and_aged_by_their_run_id_and_a_manifest_a_few_minutes_off_is_fine()
    {
        var oldest = await SetAsync("vm", Now.AddDays(-10));
        await SetAsync("vm", Now.AddDays(-5));
        await SetAsync("vm", Now.AddDays(-1));
        // A clock a little off when the manifest was written (within the tolerance) changes nothing.
        await ClaimAsync(oldest, Now.AddDays(-10).AddMinutes(5));

        var plan = PruneService.PlanSets(await ListAsync(), null, 7, Now);

        Assert.Empty(plan.Stopped);
        Assert.Equal([oldest.Location], plan.Decisions.Where(d => d.Decision.Remove).Select(d => d.Set.Location));
        Assert.Contains("10 days old", plan.Decisions.Single(d => d.Decision.Remove).Decision.Reason, StringComparison.Ordinal);
        Assert.All(plan.Decisions.Where(d => d.Set.Location != oldest.Location), d => Assert.False(d.Decision.Remove));
    }

    [Fact]
    public async Task The_newest_Complete_set_kept_from_a_removal_by_name_is_the_newest_by_run_id()
    {
        var older = await SetAsync("vm", Now.AddDays(-2));
        var newer = await SetAsync("vm", Now.AddDays(-1));
        var all = await ListAsync();

        Assert.Null(PruneService.WhyKeptAnyway(all.Single(s => s.RunId == older.RunId), all, Now));
        var kept = PruneService.WhyKeptAnyway(all.Single(s => s.RunId == newer.RunId), all, Now);
        Assert.Equal(ErrorIds.NewestCompleteSetKept, kept!.ErrorId);
        Assert.Contains(newer.Location, kept.Message, StringComparison.Ordinal);
    }
}
