namespace OdaKvmBackup.Core.Run;

/// <summary>What Repair-KvmBackup found and did.</summary>
public sealed record RepairAction(string DomainName, string? Target, string Problem, string Action, string Result);
