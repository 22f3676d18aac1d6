namespace OdaKvmBackup.Core.RunState;

/// <summary>A disk of the domain that the run does not back up, and why: the set says so.</summary>
public sealed record ExcludedDisk(string Target, string? Source, string Reason);
