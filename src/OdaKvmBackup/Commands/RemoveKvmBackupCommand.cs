using System.Management.Automation;

namespace OdaKvmBackup.Commands;

/// <summary>
/// Removes backup sets by policy (-KeepLast, -KeepDays, per domain), never the newest Complete set of a domain;
/// and the overlays Move-OverlayToRetention kept, by age (-RetentionPath, -OverlayKeepDays). Sets piped in are
/// removed as named, with the same exceptions.
/// </summary>
[Cmdlet(VerbsCommon.Remove, "KvmBackup", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High, DefaultParameterSetName = OverlaysSet)]
[OutputType(typeof(RemovedBackup))]
public sealed class RemoveKvmBackupCommand : KvmCmdlet, IDisposable
{
    private const string PolicySet = "Policy";
    private const string OverlaysSet = "Overlays";
    private const string InputObjectSet = "InputObject";
    private readonly StoreCache _stores;

    public RemoveKvmBackupCommand() => _stores = new StoreCache(() => Runner);
    private readonly Dictionary<string, IReadOnlyList<BackupSetInfo>> _catalogs = new(StringComparer.Ordinal);

    [Parameter(Mandatory = true, Position = 0, ParameterSetName = PolicySet)]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    [Parameter(Mandatory = true, ValueFromPipeline = true, ParameterSetName = InputObjectSet)]
    public BackupSetInfo InputObject { get; set; } = null!;

    [Parameter(ParameterSetName = PolicySet)]
    [Parameter(ParameterSetName = OverlaysSet)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(Completion.DomainNameCompleter))]
    public string[]? DomainName { get; set; }

    /// <summary>Keeps the n newest Complete sets of each domain.</summary>
    [Parameter(ParameterSetName = PolicySet)]
    [ValidateRange(0, 100000)]
    public int KeepLast { get; set; }

    /// <summary>Keeps every set started less than d days ago.</summary>
    [Parameter(ParameterSetName = PolicySet)]
    [ValidateRange(0, 100000)]
    public int KeepDays { get; set; }

    /// <summary>The folder Move-OverlayToRetention -Path moved overlays to.</summary>
    [Parameter(ParameterSetName = PolicySet)]
    [Parameter(Mandatory = true, ParameterSetName = OverlaysSet)]
    [ValidateNotNullOrEmpty]
    public string? RetentionPath { get; set; }

    /// <summary>Removes the retained overlays of runs older than this many days.</summary>
    [Parameter(ParameterSetName = PolicySet)]
    [Parameter(Mandatory = true, ParameterSetName = OverlaysSet)]
    [ValidateRange(0, 100000)]
    public int OverlayKeepDays { get; set; }

    /// <summary>Outputs what was removed (a RemovedBackup per set or run of overlays); -Verbose says it either way.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    private bool Given(string name) => MyInvocation.BoundParameters.ContainsKey(name);

    protected override void Begin()
    {
        if (ParameterSetName == PolicySet && !Given(nameof(KeepLast)) && !Given(nameof(KeepDays)))
            ThrowTerminatingError(ToErrorRecord(ErrorIds.NoRetentionPolicy, BackupErrorCategory.InvalidArgument,
                "No retention policy was given.", "Say what to keep: -KeepLast <n>, -KeepDays <d>, or both (-WhatIf shows what would go).", Path));
        if (Given(nameof(RetentionPath)) != Given(nameof(OverlayKeepDays)))
            ThrowTerminatingError(ToErrorRecord(ErrorIds.NoRetentionPolicy, BackupErrorCategory.InvalidArgument,
                "-RetentionPath and -OverlayKeepDays go together.", "Give both: the retention folder and how many days its overlays are kept.", RetentionPath));
    }

    protected override void ProcessRecord()
    {
        if (ParameterSetName == InputObjectSet)
            RemoveNamed(InputObject);
    }

    protected override void EndProcessing()
    {
        if (ParameterSetName == PolicySet)
            ApplyPolicy();
        if (RetentionPath is not null)
            PruneOverlays();
    }

    private Func<string, bool> DomainFilter()
    {
        var patterns = (DomainName ?? []).Select(n => WildcardPattern.Get(n, WildcardOptions.IgnoreCase)).ToList();
        return name => patterns.Count == 0 || patterns.Any(p => p.IsMatch(name));
    }

    private void ApplyPolicy()
    {
        var location = ResolveLocation(Path);
        SetPrunePlan plan;
        Core.Stores.IBackupStore store;
        try
        {
            store = _stores.Open(location, nameof(Path));
            var listing = Run(ct => BackupCatalog.ListAsync(store, DomainFilter(), ct));
            foreach (var unreadable in listing.Unreadable)
                WriteWarning($"{unreadable.Location} is left alone: {unreadable.Error.Message}");
            plan = PruneService.PlanSets(listing.Sets, Given(nameof(KeepLast)) ? KeepLast : null, Given(nameof(KeepDays)) ? KeepDays : null, DateTime.UtcNow);
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, location));
            return;
        }
        foreach (var stopped in plan.Stopped)
            WriteError(ToErrorRecord(stopped));
        foreach (var (set, decision) in plan.Decisions)
        {
            if (!decision.Remove)
            {
                WriteVerbose($"Keeping {set.Location}: {decision.Reason}.");
                continue;
            }
            Remove(store, set, decision.Reason);
        }
    }

    private void RemoveNamed(BackupSetInfo set)
    {
        try
        {
            var store = _stores.Open(set.Destination, nameof(Path));
            if (!_catalogs.TryGetValue(set.Destination, out var all))
                _catalogs[set.Destination] = all = Run(ct => BackupCatalog.ListAsync(store, null, ct)).Sets;
            if (PruneService.WhyKeptAnyway(set, all, DateTime.UtcNow) is { } kept)
            {
                WriteError(ToErrorRecord(kept, set));
                return;
            }
            Remove(store, set, $"{set.Status}, named on the pipeline");
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, set.Location));
        }
    }

    private void Remove(Core.Stores.IBackupStore store, BackupSetInfo set, string reason)
    {
        if (!ShouldProcess(set.Location, $"Remove backup set ({reason})"))
            return;
        try
        {
            Run(ct => PruneService.RemoveSetAsync(store, set, ct));
            Removed(new RemovedBackup(RemovedBackup.BackupSetKind, set.DomainName, set.RunId, set.Status, set.Location, reason));
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, set.Location));
        }
    }

    private void Removed(RemovedBackup removed)
    {
        WriteVerbose($"Removed {removed.Location}: {removed.Reason}.");
        if (PassThru)
            WriteObject(removed);
    }

    private void PruneOverlays()
    {
        var path = ResolvePath(RetentionPath!);
        if (!Directory.Exists(path))
        {
            WriteError(ToErrorRecord(ErrorIds.PathNotFound, BackupErrorCategory.ObjectNotFound,
                $"The retention folder '{path}' does not exist.", "Name the folder given to Move-OverlayToRetention -Path.", path));
            return;
        }
        var runs = PruneService.ListRetained(path, DomainFilter());
        var byCandidate = runs.ToDictionary(r => new PruneCandidate(r.DomainName, r.Name, r.TimeUtc, Status: null));
        var service = new PruneService(Tools.Virsh);
        foreach (var decision in PrunePolicy.DecideOverlays(byCandidate.Keys, OverlayKeepDays, DateTime.UtcNow))
        {
            var run = byCandidate[decision.Set];
            if (!decision.Remove)
            {
                WriteVerbose($"Keeping {run.Folder}: {decision.Reason}.");
                continue;
            }
            var files = run.Files.Count == 0 ? "an empty folder" : string.Join(", ", run.Files.Select(System.IO.Path.GetFileName));
            if (!ShouldProcess(run.Folder, $"Remove retained overlays ({files}): {decision.Reason}"))
                continue;
            try
            {
                Run(ct => service.RemoveRetainedAsync(run, ct));
                Removed(new RemovedBackup(RemovedBackup.RetainedOverlaysKind, run.DomainName, run.Name, nameof(BackupStage.Retained), run.Folder, decision.Reason));
            }
            catch (BackupException ex)
            {
                WriteError(ToErrorRecord(ex, run.Folder));
            }
        }
    }

    public void Dispose() => _stores.Dispose();
}
