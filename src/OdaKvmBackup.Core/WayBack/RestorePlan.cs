using System.Runtime.InteropServices;

namespace OdaKvmBackup.Core.WayBack;

/// <summary>One file a restore writes: where to, and what it replaces.</summary>
internal sealed record RestoreFilePlan(string Target, string SetFile, string Format, string TargetPath, long? SizeBytes, bool Replaces, string? KeptAside);

/// <summary>Everything a restore will do, decided and checked before anything is written (for -WhatIf too).</summary>
internal sealed class RestorePlan
{
    public required BackupSetInfo Set { get; init; }
    public required RestoreMode Mode { get; init; }
    public required RestoreRequest Request { get; init; }
    public string? Folder { get; init; }
    public required IReadOnlyList<RestoreFilePlan> Files { get; init; }
    public string? DefinitionXml { get; init; }
    public string? DefinitionFile { get; init; }
    public List<string> Notes { get; } = new();
    /// <summary>What of the saved definition the new one was not built from, and why (for -Verbose).</summary>
    public List<string> LeftOut { get; } = new();

    /// <summary>What the restore does, in one sentence for ShouldProcess.</summary>
    public string Describe()
    {
        var files = string.Join("; ", Files.Select(f => $"{f.Target} -> {f.TargetPath}" + (f.KeptAside is not null && f.Replaces ? $" (the file there now is kept as {f.KeptAside})" : "")));
        var sparse = Request.FullyAllocated ? "raw disks fully allocated" : "sparse";
        return Mode switch
        {
            RestoreMode.InPlace => $"Put the disks of shut-off '{Set.DomainName}' back from set {Set.RunId}, {sparse}, verified: {files}",
            RestoreMode.NewDomain => $"Restore set {Set.RunId} of '{Set.DomainName}' as a new domain '{Request.NewName}' ({DefinitionFile}, new UUID and MAC addresses{(Request.Start ? ", started" : ", not started")}), {sparse}, verified: {files}",
            _ => $"Copy the disks of set {Set.RunId} of '{Set.DomainName}' into {Folder}, {sparse}, verified: {files}",
        };
    }
}
