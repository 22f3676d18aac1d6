namespace OdaKvmBackup.Core.WayBack;

/// <summary>What Remove-KvmBackup removed: a backup set, or a run's retained overlays.</summary>
public sealed record RemovedBackup(string Kind, string DomainName, string RunId, string Status, string Location, string Reason)
{
    public const string BackupSetKind = "BackupSet";
    public const string RetainedOverlaysKind = "RetainedOverlays";
}

/// <summary>What Remove-KvmBackup does with the sets of a store: each set's decision, and one error per domain whose
/// pruning stopped (a set dated in the future or out of order).</summary>
/// <remarks>Stopped is a value, not a throw: one domain whose sets cannot be put in order must not stop the pruning
/// of the other domains; the cmdlet writes each as an error and goes on with <see cref="Decisions"/>.</remarks>
internal sealed record SetPrunePlan(IReadOnlyList<(BackupSetInfo Set, PruneDecision Decision)> Decisions, IReadOnlyList<BackupException> Stopped);

/// <summary>A run's folder of retained overlays: &lt;retention&gt;/&lt;domain&gt;/&lt;run id&gt; (or repaired-&lt;run id&gt;).</summary>
internal sealed record RetainedRun(string DomainName, string Name, string Folder, DateTime TimeUtc, IReadOnlyList<string> Files);

/// <summary>
/// Remove-KvmBackup's work: applies <see cref="PrunePolicy"/> to the sets of a store and to the overlays that
/// Move-OverlayToRetention keeps, and removes what it says, checking again right before each removal.
/// </summary>
internal sealed class PruneService(VirshClient virsh)
{
    /// <summary>The policy's decisions for these sets (only sets with a readable manifest take part), by the store's
    /// layout: grouped by the folder a set sits in and ordered by its run id. A domain with a set dated in the future
    /// or out of order keeps every set, and is named in <see cref="SetPrunePlan.Stopped"/>.</summary>
    public static SetPrunePlan PlanSets(IReadOnlyList<BackupSetInfo> sets, int? keepLast, int? keepDays, DateTime nowUtc)
    {
        var candidates = sets.Select(s => (Set: s, Candidate: Candidate(s))).ToList();
        var bySet = candidates.ToDictionary(c => c.Candidate, c => c.Set, ByReference);
        var decisions = PrunePolicy.Decide(candidates.Select(c => c.Candidate), keepLast, keepDays, nowUtc)
            .Select(d => (bySet[d.Set], d)).ToList();
        return new SetPrunePlan(decisions, Stopped(candidates, nowUtc));
    }

    /// <summary>Why a set the user named may not go: it is the newest Complete set of its domain in
    /// <paramref name="all"/> (every set of that store, ordered by run id), or InProgress, or its domain has a set
    /// dated in the future or out of order. Null when it may go. A value, not a throw: it answers whether a set may
    /// go (as <see cref="PlanSets"/> does for a policy); the cmdlet writes a "no" as that set's error and goes on
    /// with the next set on the pipeline.</summary>
    public static BackupException? WhyKeptAnyway(BackupSetInfo set, IReadOnlyList<BackupSetInfo> all, DateTime nowUtc)
    {
        var domain = all.Where(s => s.DomainName == set.DomainName).Select(s => (Set: s, Candidate: Candidate(s))).ToList();
        if (Stopped(domain, nowUtc) is [var stopped, ..])
            return stopped;
        string? why = null;
        if (set.Manifest.Status == BackupSetStatus.InProgress)
            why = "InProgress: a backup may be writing it";
        else if (domain.Select(d => d.Set).Where(s => s.Manifest.Status == BackupSetStatus.Complete).MaxBy(s => s.RunId, StringComparer.Ordinal) is { } newest
            && newest.RunId == set.RunId)
            why = $"the newest Complete set of '{set.DomainName}': never removed";
        return why is null ? null : new BackupException(ErrorIds.NewestCompleteSetKept, BackupErrorCategory.InvalidOperation,
            $"The set {set.Location} was not removed: {why}.", "Back the VM up again first; once a newer set is Complete, this one can go.", set.Location);
    }

    // Each set is its own candidate, whatever another one holds.
    private static readonly IEqualityComparer<PruneCandidate> ByReference = ReferenceEqualityComparer.Instance;

    private static PruneCandidate Candidate(BackupSetInfo set) =>
        new(set.DomainName, set.RunId, set.RunTimeUtc, set.Manifest.Status, set.StartedUtc);

    /// <summary>One error per domain whose sets cannot be put in order, naming each such set where it lies.</summary>
    private static IReadOnlyList<BackupException> Stopped(IReadOnlyList<(BackupSetInfo Set, PruneCandidate Candidate)> sets, DateTime nowUtc)
    {
        var bySet = sets.ToDictionary(s => s.Candidate, s => s.Set, ByReference);
        return PrunePolicy.OutOfOrder(sets.Select(s => s.Candidate), nowUtc).GroupBy(o => o.Set.DomainName, StringComparer.Ordinal)
            .Select(domain => new BackupException(ErrorIds.BackupSetOutOfOrder, BackupErrorCategory.InvalidData,
                $"Pruning of '{domain.Key}' stopped: {string.Join("; ", domain.Select(o => $"the set {bySet[o.Set].Location} cannot be put in order: {o.Why}"))}. Nothing of '{domain.Key}' was removed.",
                "Sets are dated by their folder (the run id, UTC). Find out who wrote that set (the backup store can be written by others) or whether this host's clock was wrong when it was made; move the set out of the destination, then prune again. The other VMs were pruned.",
                domain.Key))
            .ToList();
    }

    /// <summary>Deletes a set's folder, after reading its manifest again: a set that a run is writing now (its
    /// journal names it) or that changed status since it was listed is left alone.</summary>
    public static async Task RemoveSetAsync(IBackupStore store, BackupSetInfo set, CancellationToken ct)
    {
        var now = await BackupCatalog.LoadAsync(store, set.SetFolder, ct).ConfigureAwait(false);
        if (now is null)
            return; // gone already
        if (now.Manifest.Status != set.Manifest.Status)
            throw new BackupException(ErrorIds.BackupSetNotFound, BackupErrorCategory.InvalidOperation,
                $"The set {set.Location} changed from {set.Status} to {now.Status} since it was listed; it was not removed.",
                "Run Remove-KvmBackup again.", set.Location);
        if (RunJournal.TryLoad(set.DomainName) is { } run && run.RunId == set.RunId)
            throw RunErrors.BackupInProgress(set.DomainName);
        await store.DeleteAsync(set.SetFolder, recursive: true, ct).ConfigureAwait(false);
    }

    /// <summary>The run folders of a retention path: &lt;path&gt;/&lt;domain&gt;/&lt;run id&gt;/ (folders with other names are not
    /// the module's and are never listed).</summary>
    public static IReadOnlyList<RetainedRun> ListRetained(string retentionPath, Func<string, bool>? domainFilter)
    {
        var runs = new List<RetainedRun>();
        foreach (var domain in new DirectoryInfo(retentionPath).EnumerateDirectories())
        {
            if (domain.LinkTarget is not null || domainFilter?.Invoke(domain.Name) == false)
                continue;
            foreach (var run in domain.EnumerateDirectories())
            {
                if (run.LinkTarget is not null || !BackupNames.TryParseRetentionFolder(run.Name, out var time))
                    continue;
                runs.Add(new RetainedRun(domain.Name, run.Name, run.FullName, time,
                    run.EnumerateFileSystemInfos().Select(f => f.FullName).Order(StringComparer.Ordinal).ToList()));
            }
        }
        return runs;
    }

    /// <summary>Deletes a run's retained overlays, once no domain has any of them in a backing chain.</summary>
    public async Task RemoveRetainedAsync(RetainedRun run, CancellationToken ct)
    {
        var inUse = await HostPaths.ChainFilesOfAllDomainsAsync(virsh, ct).ConfigureAwait(false);
        if (run.Files.FirstOrDefault(f => inUse.Contains(HostPaths.Real(f))) is { } used)
            throw new BackupException(ErrorIds.OverlayInUse, BackupErrorCategory.ResourceBusy,
                $"'{used}' is in the backing chain of a domain on this host; '{run.Folder}' was not removed.",
                "Find the domain with 'virsh domblklist <domain> --details'; commit it (Repair-KvmBackup) before removing the overlays.", run.DomainName);
        try
        {
            Directory.Delete(run.Folder, recursive: true);
            PrivateFiles.FsyncDirectory(Path.GetDirectoryName(run.Folder)!);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw StoreErrors.FromIOException(ex, run.Folder);
        }
    }
}
